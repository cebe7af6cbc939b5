from twisted.application.service import ServiceMaker

director_manager = ServiceMaker(
    "director-manager",
    "director.manager.tap",
    "Director manager: dashboard, API, operations",
    "director-manager",
)
