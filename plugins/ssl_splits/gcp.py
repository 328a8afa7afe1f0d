"""Google Cloud access from Airflow: always through the ``google_cloud_default``
connection (or application-default credentials when it is not defined).

* ``airflow_storage()``: gs:// calls of ``beam_jobs.storage`` made by a task
  (listing the source, reading plans, publishing the manifest) use a client
  built by the provider's GCSHook from the connection.
* ``gcp_credentials_for_subprocess()``: a Beam job launched by a task gets the
  connection's key file through GOOGLE_APPLICATION_CREDENTIALS for its
  lifetime (the provider's own mechanism); with no key in the connection,
  the job uses application-default credentials.
No credential is ever logged, returned, or written to XCom or the manifest.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from beam_jobs import storage

log = logging.getLogger(__name__)
CONN_ID = "google_cloud_default"


def _connection_defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
        return True
    except Exception:  # AirflowNotFoundException, or no metadata DB access
        return False


@contextlib.contextmanager
def gcp_credentials_for_subprocess(conn_id: str = CONN_ID) -> Iterator[None]:
    if not _connection_defined(conn_id):
        yield
        return
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    with GoogleBaseHook(gcp_conn_id=conn_id).provide_gcp_credential_file_as_context():
        yield


@contextlib.contextmanager
def airflow_storage(conn_id: str = CONN_ID) -> Iterator[None]:
    """Route this thread's gs:// access through the connection's client."""
    if not _connection_defined(conn_id):
        yield
        return
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    with storage.use_client(GCSHook(gcp_conn_id=conn_id).get_conn()):
        yield
