from twisted.application.service import ServiceMaker

director_all = ServiceMaker(
    "director", "director.combined.tap", "Director: all four components in one reactor", "director"
)
