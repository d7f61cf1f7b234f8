"""Load testing of the serving layer: simulated editors, trace replay, a keep-alive client, a server launcher."""
