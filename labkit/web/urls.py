"""URLs of the web tier.

Introduced in notebooks/02_web_tier.ipynb.

- ``GET /healthz``, ``GET /api/constant``      no auth, no database
- ``POST|DELETE /api/media/<media_id>/like``   like / unlike (leader)
- ``GET /api/media/<media_id>``                media item with like count (follower)
- ``GET /api/users/<user_id>``                 profile (follower)
- ``GET /api/feed?count=20&seen=<id>,...``       a ranked feed page (follower; notebook 11)
- ``POST /api/posts?caption=...``               post a photo: PostgreSQL, Cassandra, fan-out task
"""

from django.urls import path

from labkit.web import views

urlpatterns = [
    path("healthz", views.healthz),
    path("api/constant", views.constant),
    path("api/media/<str:media_id>/like", views.like),
    path("api/media/<str:media_id>", views.media),
    path("api/users/<str:user_id>", views.profile),
    path("api/feed", views.feed),
    path("api/posts", views.post),
]

handler404 = "labkit.web.views.not_found"
handler500 = "labkit.web.views.server_error"
