"""`tailor serve --registry URL --registry-model NAME`: the registry side of following a production model.

Serving follows any `ProductionSource` (tailor.serving.follow); this module provides the one that
reads a model registry: the version the production alias of NAME points to, and the registry's
revision counter, which moves whenever that alias does.
"""

from __future__ import annotations

from tailor.config import ServeConfig
from tailor.errors import TailorError
from tailor.mlops.registry import Registry
from tailor.serving.follow import Production


class RegistrySource:
    """(revision, production version) of one model name, read from a registry (blocking: call off the loop)."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name
        self.registry = Registry(url, create=False)  # a mistyped path is an error, not a new empty registry

    def __call__(self) -> tuple[int, Production | None]:
        # Revision first: if the alias moves between the two reads, the next poll sees a new revision
        # and re-reads; reading production first could pair a new version with a stale revision.
        revision = self.registry.revision(self.name)
        v = self.registry.production(self.name)
        return revision, None if v is None else Production(v.name, v.version, v.path, v.base_path)

    def first(self) -> tuple[int, Production]:
        """The version to start on; a clear error when the name has no production version."""
        revision, prod = self()
        if prod is None:
            versions = self.registry.versions(self.name)
            have = (f"it has versions {[v.version for v in versions]} but none is in production" if versions
                    else "it has no versions of that name")
            raise TailorError(f"the registry {self.url} has no production version of '{self.name}': {have}",
                              where="serve.registry_model / --registry-model",
                              fix=f"promote one first (tailor registry promote {self.name} VERSION --url {self.url}), "
                                  "or check the name")
        return revision, prod


def registry_source(cfg: ServeConfig) -> RegistrySource | None:
    """The source serve.registry + serve.registry_model name, or None when neither is set (serve a directory)."""
    if not cfg.registry and not cfg.registry_model:
        return None
    if not cfg.registry:
        raise TailorError("serve.registry_model is set but no registry is given", where="--registry / serve.registry",
                          fix="add --registry URL (a registry file, sqlite:///PATH or a SQLAlchemy URL)")
    if not cfg.registry_model:
        raise TailorError("--registry needs the name of the model to serve from it",
                          where="--registry-model / serve.registry_model",
                          fix="add --registry-model NAME (tailor registry list --url URL shows the names)")
    return RegistrySource(cfg.registry, cfg.registry_model)
