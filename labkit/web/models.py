"""Django's view of the data model: routing hints only; data access is ``labkit.backend``.

Introduced in notebooks/02_web_tier.ipynb.
"""

from django.db import models


class MediaLikes(models.Model):
    """The denormalized like counter (one row per media item, in the media's shard schema).

    Unmanaged: ``labkit.backend.schema`` creates the tables. Views ask the router which
    database reads and writes of this model go to, then call ``labkit.backend.likes``.
    """

    media_id = models.BigIntegerField(primary_key=True)
    count = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "media_likes"
        app_label = "labkit_web"
