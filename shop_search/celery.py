import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.dev")

app = Celery("shop_search")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The import task lives with the importer (catalog.importing), not in catalog.tasks; the
# project's housekeeping (shop_search is no app) in shop_search.tasks.
app.autodiscover_tasks(["catalog.importing", "shop_search"])


@signals.setup_logging.connect
def use_django_logging(**kwargs) -> None:
    """Workers and beat log through Django's LOGGING (JSON lines in production), not Celery's.

    Configured now rather than at django.setup(), so that warnings of the start-up go there too.
    """
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def queue_long_task(task, *args) -> None:
    """Queue a long task (training, filling a space) once the transaction commits.

    Without a broker (the embedded default) tasks run in process; a task of minutes then
    runs in a background thread, so the admin page that asked for it returns at once.
    """
    import threading

    from django.conf import settings
    from django.db import connection, transaction

    if not (settings.CELERY_TASK_ALWAYS_EAGER and settings.LONG_TASKS_IN_THREAD_WHEN_EAGER):
        transaction.on_commit(lambda: task.delay(*args), robust=True)
        return

    def run():
        try:
            task.apply(args=args)
        finally:
            connection.close()

    transaction.on_commit(lambda: threading.Thread(target=run, name=task.name, daemon=True).start())


def queued_messages(queue: str) -> int:
    """Messages waiting in a broker queue (not counting those a worker already holds)."""
    from kombu.exceptions import ChannelError

    with app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except ChannelError:  # never declared, or drained and removed: nothing waits
            return 0
