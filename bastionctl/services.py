"""The service catalogue: built-in rdp / mysql / mssql plus services defined in config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bastionctl.errors import UsageError
from bastionctl.model import Service

BUILTIN_SERVICES: tuple[Service, ...] = (
    Service("rdp", 3389, 53389, "{host}:{port}", (), "Remote Desktop"),
    Service("mysql", 3306, 53306, "mysql -h {host} -P {port}", ("mariadb",), "MySQL / MariaDB"),
    # SQL Server clients want a comma between address and port, and a literal address.
    Service("mssql", 1433, 51433, "{host},{port}", ("sqlserver",), "SQL Server"),
)


class ServiceCatalogue:
    def __init__(self, services: Iterable[Service]) -> None:
        self._by_name: dict[str, Service] = {}
        self._lookup: dict[str, Service] = {}
        for service in services:
            self._by_name[service.name] = service
        for service in self._by_name.values():
            for key in (service.name, *service.aliases):
                self._lookup[key.lower()] = service

    @classmethod
    def with_builtins(cls, extra: Iterable[Service] = ()) -> ServiceCatalogue:
        return cls([*BUILTIN_SERVICES, *extra])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup

    def get(self, name: str) -> Service:
        try:
            return self._lookup[name.lower()]
        except KeyError:
            raise UsageError(
                f"unknown service '{name}'",
                f"valid services: {', '.join(self.names())} (or: tunnel port HOST REMOTE_PORT)",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def all(self) -> Mapping[str, Service]:
        return dict(self._by_name)
