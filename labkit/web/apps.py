"""The Django app of the web tier (its one model only tells the router what a read is)."""

from django.apps import AppConfig


class InstagramConfig(AppConfig):
    name = "labkit.web"
    label = "labkit_web"
    verbose_name = "Instagram backend lab"
