from twisted.application.service import ServiceMaker

director_router = ServiceMaker(
    "director-router",
    "director.router.tap",
    "Director router: front nginx, custom domains, ACME",
    "director-router",
)
