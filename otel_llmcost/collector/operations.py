"""The writes a running collector makes on behalf of the CLI, by name: its query endpoint and ClickHouse
interface are read-only, and the embedded store can be opened by this process only.

- `write`: one of `writes.NAMED_WRITES` (a fixed statement) with its typed parameters;
- `reprice`: `reprice.reprice` over a time range, with the price file the CLI sent (its text).
Neither takes SQL from the client.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from datetime import datetime

from ..store import StoreError


class Operations:
    def __init__(self, store) -> None:
        self.store = store
        self._reprice_lock = threading.Lock()  # one reprice at a time: each rebuilds rollup minutes

    def write(self, document: dict) -> dict:
        from ..writes import NAMED_WRITES as writes

        name, parameters = document.get("write"), document.get("parameters")
        if name not in writes or not isinstance(parameters, dict):
            raise StoreError(f"unknown write {str(name)[:60]!r}: the collector makes only {sorted(writes)}")
        # (arrays stay lists, bound as arrays; any other value is bound as text its typed placeholder parses)
        self.store.command(writes[name], {key: value if isinstance(value, list) else str(value)
                                          for key, value in parameters.items()})
        return {"written": name}

    def reprice(self, document: dict) -> dict:
        from ..reprice import reprice
        from .price_overrides import PriceFileError
        from .pricing import PriceCatalog

        try:
            since = datetime.fromisoformat(str(document["since"]))
            until = datetime.fromisoformat(str(document["until"]))
        except (KeyError, ValueError) as exc:
            raise StoreError(f"reprice needs 'since' and 'until' as ISO times: {exc}") from exc
        if since.tzinfo is None or until.tzinfo is None or since >= until:
            raise StoreError("reprice needs 'since' before 'until', both with a time zone")
        model = document.get("model") or None
        prices = document.get("prices")
        path = directory = None
        try:
            if prices:
                # Under the file's own name: the name is part of the price source stored with each row, and a
                # second run with the same file must find nothing changed.
                name = os.path.basename(str(document.get("prices_name") or "prices.yaml")) or "prices.yaml"
                directory = tempfile.mkdtemp(prefix="llmcost-reprice-")
                path = os.path.join(directory, name)
                with open(path, "w") as f:
                    f.write(str(prices))
            try:
                catalog = PriceCatalog(path) if path else PriceCatalog()
            except PriceFileError as exc:
                raise StoreError(str(exc).replace(path or "", "the price file")) from exc
            if not path:
                catalog.price_file = None  # the CLI asked for list prices, whatever file this collector uses
            with self._reprice_lock:
                return reprice(self.store, catalog, since, until, model, progress_out=None)
        finally:
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
