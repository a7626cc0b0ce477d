"""Every write to the clinical domain goes through a function in this package.

Pages, the REST API and Celery tasks call the same services, so each rule lives
in one place. Functions are keyword-only and named `<entity>_<action>`.
"""
