"""Akkio-style data placement over the regional Cassandra clusters (notebook 10).

Introduced in notebooks/10_akkio_placement.ipynb: the location database and its cache
(``location``), access counters and the migration policy (``policy``), the fenced regional
store and the migration step (``store``), the placement service process (``service``) and
the region-aware client (``client``).
"""

from labkit.backend.akkio.client import AkkioClient, RegionUnavailable, Request, sign_up
from labkit.backend.akkio.location import Location, LocationCache, LocationDB, cache_prefix
from labkit.backend.akkio.policy import AccessCounters, MigrationPolicy
from labkit.backend.akkio.service import Placement, PlacementClient, PlacementService
from labkit.backend.akkio.store import Fenced, RegionStore, migrate

__all__ = ["AccessCounters", "AkkioClient", "Fenced", "Location", "LocationCache",
           "LocationDB", "MigrationPolicy", "Placement", "PlacementClient", "PlacementService",
           "RegionStore", "RegionUnavailable", "Request", "cache_prefix", "migrate", "sign_up"]
