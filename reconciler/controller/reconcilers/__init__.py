"""Pure reconcilers: each turns what a cycle observed into the writes it needs (actions)."""
