"""Forgetting personal data in an immutable log: crypto-shredding, per data subject.

Declare which fields of which event types are personal, and which data field names their subject (a
customer id, kept in plain text); open the store with it. ``append`` and ``save`` encrypt those fields with the
subject's own key (AES-256-GCM, from ``cryptography``; one key per subject, in the KV bucket
``personal_keys``); every read decrypts them. Forgetting the subject erases its key: the events stay as they
are, and every read path shows :data:`FORGOTTEN` (``"<forgotten>"``) for those fields from then on.

>>> personal = eskit.Personal({"registered": ["email", "name"]}, subject="customer")     # doctest: +SKIP
>>> customers = await client.event_store("customers", privacy=personal)                 # doctest: +SKIP
>>> await customers.append("c1", [eskit.Event("registered", {"customer": "c1", "email": "ann@example.com",
...                                                          "name": "Ann"})])          # doctest: +SKIP
>>> await eskit.forget(client, "c1")                                                     # doctest: +SKIP
True
>>> (await customers.read("c1"))[0].data                                                 # doctest: +SKIP
{'customer': 'c1', 'email': '<forgotten>', 'name': '<forgotten>'}

What it guarantees, and what not (copies, backups of the key bucket, read models): ``docs/privacy.md``.
"""

from __future__ import annotations

from .keys import DEFAULT_BUCKET, KeyRing
from .personal import FORGOTTEN, Personal, Privacy

__all__ = ["DEFAULT_BUCKET", "FORGOTTEN", "KeyRing", "Personal", "Privacy"]  # eskit.forget: in eskit.connection
