"""
A swarm of several nodes on one machine: each node a dockerd in its own network namespace,
joined over a private bridge, with an orchestrator of its own (docs/orchestrator.md,
"Several nodes"). For development and tests; a school's real nodes are machines.
"""
