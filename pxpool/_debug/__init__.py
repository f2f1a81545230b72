"""Remote debugging: the session on the client, the signed wire, the agent on engines."""
