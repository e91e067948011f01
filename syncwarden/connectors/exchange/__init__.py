"""Exchange Online's admin API, used for mail-enabled groups that Graph cannot change."""
