"""The worker-facing side: register, claim, heartbeat, results."""
