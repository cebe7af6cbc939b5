"""twistd entry point: director-router."""

from twisted.application.service import IService

from director.common.tap import Options, make_service


def makeService(options: Options) -> IService:
    from director.router.service import build_service

    return make_service(build_service, options)


__all__ = ["Options", "makeService"]
