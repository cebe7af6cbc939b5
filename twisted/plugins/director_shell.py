from twisted.application.service import ServiceMaker

director_shell = ServiceMaker(
    "director-shell",
    "director.shell.tap",
    "Director shell: SSH into site containers",
    "director-shell",
)
