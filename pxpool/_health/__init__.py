"""Engine health: the agent on engines, the collector and state rules, the table."""
