"""Director: self-hosted websites for schools, as one Twisted daemon."""

from setuptools import find_packages, setup

setup(
    name="director",
    version="0.1.0",
    description="Self-hosted website platform for schools (manager, orchestrator, router, shell)",
    python_requires=">=3.11",
    # twisted.plugins is a namespace shared with Twisted: ship our plugin modules into it.
    packages=find_packages(include=["director", "director.*"]) + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["director_*.py"],
        "director": ["py.typed"],
        "director.manager.migrations": ["script.py.mako"],
        "director.manager.dashboard": ["templates/**/*", "static/**/*"],
    },
    install_requires=[
        "Twisted[tls,conch]>=24.10",
        "klein>=24.8",
        "treq>=24.9",
        "autobahn>=24.4",
        "txredisapi>=1.4.10",
        "docker>=7.1",
        "acme>=3.0",
        "josepy>=2.0",
        "cryptography>=42",
        "Jinja2>=3.1",
        "bcrypt>=4.0",
        "psycopg[binary]>=3.1",
        "PyMySQL>=1.1",
        "SQLAlchemy>=2.0",
        "alembic>=1.13",
        "markdown-it-py>=3.0",
        "croniter>=6.0",
        "prometheus_client>=0.20",
    ],
    entry_points={"console_scripts": ["director = director.cli:main"]},
)
