"""Infer a `fastpex_binary`'s dependency on the module its `entry_point` names.

The same inference the python backend does for `pex_binary`, for fastpex's own entry point
field (see `FastpexEntryPointField` for why it is a separate field).
"""

from __future__ import annotations

from dataclasses import dataclass

from pants.backend.python.dependency_inference.module_mapper import (
    PythonModuleOwners,
    PythonModuleOwnersRequest,
)
from pants.backend.python.dependency_inference.subsystem import PythonInferSubsystem
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import (
    PythonResolveField,
    ResolvedPexEntryPoint,
    ResolvePexEntryPointRequest,
)
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import FieldSet, InferDependenciesRequest, InferredDependencies
from pants.engine.unions import UnionRule

from fastpex.pants.target_types import FastpexBinaryDependenciesField, FastpexEntryPointField


@dataclass(frozen=True)
class FastpexEntryPointInferenceFieldSet(FieldSet):
    required_fields = (FastpexBinaryDependenciesField, FastpexEntryPointField, PythonResolveField)

    dependencies: FastpexBinaryDependenciesField
    entry_point: FastpexEntryPointField
    resolve: PythonResolveField


class InferFastpexEntryPointDependency(InferDependenciesRequest):
    infer_from = FastpexEntryPointInferenceFieldSet


@rule(desc="Inferring dependency from the fastpex_binary `entry_point` field")
async def infer_fastpex_entry_point_dependency(
    request: InferFastpexEntryPointDependency,
    python_infer: PythonInferSubsystem,
    python_setup: PythonSetup,
) -> InferredDependencies:
    field_set = request.field_set
    if not python_infer.entry_points or field_set.entry_point.value is None:
        return InferredDependencies([])
    entry_point = await Get(ResolvedPexEntryPoint, ResolvePexEntryPointRequest(field_set.entry_point))
    if entry_point.val is None:
        return InferredDependencies([])
    owners = await Get(
        PythonModuleOwners,
        PythonModuleOwnersRequest(
            entry_point.val.module, resolve=field_set.resolve.normalized_value(python_setup)
        ),
    )
    return InferredDependencies(owners.unambiguous)


def rules():
    return [*collect_rules(), UnionRule(InferDependenciesRequest, InferFastpexEntryPointDependency)]
