"""Remote debugging: the session on the client, the signed wire, and on engines the agent
and the pdb it serves."""
