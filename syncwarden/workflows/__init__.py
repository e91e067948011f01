"""Access requests as tickets: the model, durable provisioning steps, audit and use cases."""
