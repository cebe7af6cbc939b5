from twisted.application.service import ServiceMaker

director_orchestrator = ServiceMaker(
    "director-orchestrator",
    "director.orchestrator.tap",
    "Director orchestrator: sites in Docker swarm behind nginx",
    "director-orchestrator",
)
