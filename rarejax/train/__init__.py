"""Train state, optimizer, losses and the jitted sharded train step."""
