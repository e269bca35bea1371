"""Private file storage: files the app keeps for itself and never serves (import uploads)."""

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.utils.functional import cached_property


class PrivateFileSystemStorage(FileSystemStorage):
    """A folder outside MEDIA_ROOT (PRIVATE_ROOT unless given a location) that no URL reaches.

    An uploaded import file can hold any bytes (an "evil.html" sent as a CSV), so it must
    never be served from the shop's domain: it has no URL, and nginx has no route to it.
    """

    @cached_property
    def base_location(self):
        return self._value_or_setting(self._location, settings.PRIVATE_ROOT)

    def _clear_cached_properties(self, setting, **kwargs):
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "PRIVATE_ROOT":  # as FileSystemStorage follows MEDIA_ROOT
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)

    def url(self, name):
        raise ValueError(f"{name} is a private file: it has no URL")


def import_file_storage() -> FileSystemStorage:
    # A callable, so the migrations name it rather than freezing a path.
    return storages["imports"]
