"""The handlers of `tailor hpo`, `tailor registry ...` and `tailor refresh`.

Their arguments are declared in tailor.config.commands and their entries in cli.py's command table; the
handlers live here to keep cli.py short.
"""

from __future__ import annotations

from tailor.config import HpoRecipe, RefreshRecipe, load_recipe
from tailor.config import commands as C
from tailor.errors import TailorError


def _console():
    from rich.console import Console

    return Console(stderr=False)


def cmd_hpo(a: C.HpoCommand) -> int:
    from tailor.mlops.hpo import run

    run(load_recipe(a.recipe, a.overrides, reads=HpoRecipe), a.space, a, console=_console())  # a: the HpoSettings
    return 0


def _registry(a: C.RegistryCommand, create: bool = False):
    from tailor.mlops.registry import Registry

    return Registry(a.url, create=create)


def cmd_registry_list(a: C.RegistryListCommand) -> int:
    import json

    from tailor.mlops.registry_view import print_versions

    with _registry(a) as reg:
        versions = reg.versions(a.name)
        if a.name and not versions:
            names = reg.names()
            raise TailorError(f"no versions of {a.name!r} in the registry", where=reg.where,
                              fix=f"registered models: {', '.join(names)}" if names else "register one: tailor registry register NAME DIR")
        if a.json_:
            print(json.dumps([v.to_dict() for v in versions], indent=2, ensure_ascii=False))
        else:
            print_versions(versions, _console(), reg.where)
    return 0


def cmd_registry_show(a: C.RegistryShowCommand) -> int:
    import json

    from tailor.mlops.registry_view import print_version

    with _registry(a) as reg:
        mv = reg.get(a.name, a.version) if a.version is not None else reg.production(a.name)
        if mv is None:
            raise TailorError(f"{a.name} has no production version", where=reg.where, fix="name a version: tailor registry show NAME V")
        events = reg.events(a.name, mv.version)
        if a.json_:
            print(json.dumps({**mv.to_dict(), "events": events}, indent=2, ensure_ascii=False))
        else:
            print_version(mv, events, _console())
    return 0


def cmd_registry_register(a: C.RegistryRegisterCommand) -> int:
    from tailor.adapters.loading import adapter_base, is_adapter_dir
    from tailor.mlops.refresh import recipe_record
    from tailor.mlops.registry_view import read_metrics

    recipe, fingerprint = recipe_record(load_recipe(a.recipe)) if a.recipe else (None, None)
    base = a.base or (adapter_base(a.path) or None if is_adapter_dir(a.path) else None)
    with _registry(a, create=True) as reg:
        mv = reg.register(a.name, a.path, base_path=base, recipe=recipe, data_fingerprint=a.data_fingerprint or fingerprint,
                          parent=a.parent, metrics=read_metrics(a.metrics) if a.metrics else None, stage=a.stage,
                          note=a.note, reason=a.note)
    _console().print(f"[bold green]registered[/] {mv.name} v{mv.version} ({mv.stage}) -> {mv.path}")
    return 0


def cmd_registry_promote(a: C.RegistryPromoteCommand) -> int:
    with _registry(a) as reg:
        before = reg.production(a.name)
        mv = reg.promote(a.name, a.version, a.reason)
    if before is not None and before.version == mv.version:
        _console().print(f"{mv.name} v{mv.version} is already production; nothing changed")
    else:
        _console().print(f"[bold green]promoted[/] {mv.name} v{mv.version} to production"
                         + (f" (v{before.version} archived)" if before else ""))
    return 0


def cmd_registry_rollback(a: C.RegistryRollbackCommand) -> int:
    with _registry(a) as reg:
        before = reg.production(a.name)
        mv = reg.rollback(a.name, a.reason, to=a.to)
    _console().print(f"[bold green]rolled back[/] {mv.name}: v{mv.version} is production again"
                     + (f" (v{before.version} archived)" if before else ""))
    return 0


def cmd_refresh(a: C.RefreshCommand) -> int:
    from tailor.mlops.refresh import run

    result = run(load_recipe(a.recipe, a.overrides, reads=RefreshRecipe), force=a.force, registry=a.url, console=_console())
    return 1 if result.decision == "rejected" else 0
