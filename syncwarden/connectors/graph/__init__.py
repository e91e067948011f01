"""Microsoft Graph: the HTTP client with retries and limits, and the operations Syncwarden uses."""
