"""Single source of the two seccomp JSON Schemas (draft 2020-12).

    python -m bpfpolicy.kinds.seccomp.schema     # rewrites bpfpolicy/schemas/oci-seccomp.json, seccompprofile.json

The enums are those of the OCI runtime-spec (`schema/defs-linux.json`: SeccompArch,
SeccompAction, SeccompFlag, SeccompOperators); Docker's `archMap`/`includes`/`excludes`
and containers-common's `errno`/`defaultErrno` are added. A test keeps the files in sync.
"""

from __future__ import annotations

import json
from typing import Any

from ...resources import SCHEMAS_DIR
from .arch import ACTIONS, FLAGS, OCI_ARCHES, OPERATORS

I64_MIN, U64_MAX = -(1 << 63), (1 << 64) - 1


def _defs() -> dict[str, Any]:
    arch = {"type": "string", "enum": list(OCI_ARCHES), "description": "libseccomp architecture name"}
    action = {"type": "string", "enum": list(ACTIONS),
              "description": "What the kernel does when the rule matches (SCMP_ACT_KILL = KILL_THREAD)"}
    errno_name = {"type": "string", "pattern": "^E[A-Z0-9]+$",
                  "description": "errno by name, e.g. EPERM (containers-common)"}
    filt = {
        "type": "object",
        "description": "Docker condition on the target (moby/profiles seccomp.go Filter)",
        "properties": {
            "caps": {"type": ["array", "null"], "items": {"type": "string"},
                     "description": "capabilities (CAP_*) of the target's bounding set"},
            "arches": {"type": ["array", "null"], "items": {"type": "string"},
                       "description": "Go architecture names (amd64, x86, x32, arm64, ...)"},
            "minKernel": {"type": ["string", "null"], "pattern": "^[0-9]+\\.[0-9]+$",
                          "description": "kernel version MAJOR.MINOR"},
        },
        "additionalProperties": False,
    }
    arg = {
        "type": "object",
        "description": "One argument comparison; a rule's comparisons are ANDed",
        "properties": {
            "index": {"type": "integer", "minimum": 0, "description": "argument number, 0..5"},
            "value": {"type": "integer", "minimum": I64_MIN, "maximum": U64_MAX,
                      "description": "compared value (for MASKED_EQ: the mask); 64-bit, negative = two's complement"},
            "valueTwo": {"type": "integer", "minimum": I64_MIN, "maximum": U64_MAX,
                         "description": "MASKED_EQ only: the value (arg & value) must equal"},
            "op": {"type": "string", "enum": list(OPERATORS), "description": "comparison operator"},
        },
        "required": ["index", "value", "op"],
        "additionalProperties": False,
    }
    rule = {
        "type": "object",
        "description": "Syscalls and the action taken for them (optionally only when args match)",
        "properties": {
            "names": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                      "description": "syscall names"},
            "name": {"type": "string", "minLength": 1, "description": "one syscall (deprecated Docker field)"},
            "action": {"$ref": "#/$defs/action"},
            "errnoRet": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535,
                         "description": "errno for SCMP_ACT_ERRNO, message data for SCMP_ACT_TRACE (default EPERM)"},
            "errno": {"$ref": "#/$defs/errnoName"},
            "args": {"type": ["array", "null"], "items": {"$ref": "#/$defs/arg"}},
            "comment": {"type": "string"},
            "includes": {"$ref": "#/$defs/filter"},
            "excludes": {"$ref": "#/$defs/filter"},
        },
        "required": ["action"],
        "anyOf": [{"required": ["names"]}, {"required": ["name"]}],
        "additionalProperties": False,
    }
    profile = {
        "type": "object",
        "description": "OCI LinuxSeccomp with Docker and containers-common extensions",
        "properties": {
            "defaultAction": {"$ref": "#/$defs/action"},
            "defaultErrnoRet": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535,
                                "description": "errno of an SCMP_ACT_ERRNO default (default EPERM)"},
            "defaultErrno": {"$ref": "#/$defs/errnoName"},
            "architectures": {"type": ["array", "null"], "items": {"$ref": "#/$defs/arch"},
                              "description": "ABIs the filter accepts; others get KILL_PROCESS"},
            "archMap": {"type": ["array", "null"], "description": "Docker: native arch -> sub-architectures",
                        "items": {"type": "object", "properties": {
                            "architecture": {"$ref": "#/$defs/arch"},
                            "subArchitectures": {"type": ["array", "null"], "items": {"$ref": "#/$defs/arch"}}},
                            "required": ["architecture"], "additionalProperties": False}},
            "flags": {"type": ["array", "null"], "items": {"type": "string", "enum": list(FLAGS)},
                      "description": "seccomp(2) filter flags"},
            "listenerPath": {"type": "string"},
            "listenerMetadata": {"type": "string"},
            "syscalls": {"type": ["array", "null"], "items": {"$ref": "#/$defs/rule"}},
        },
        "required": ["defaultAction"],
        "additionalProperties": False,
    }
    return {"arch": arch, "action": action, "errnoName": errno_name, "filter": filt, "arg": arg,
            "rule": rule, "profile": profile}


def oci_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "OCI / Docker seccomp profile (JSON file with top-level defaultAction)",
        "$ref": "#/$defs/profile",
        "$defs": _defs(),
    }


def native_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "bpfpolicy SeccompProfile: an OCI/Docker seccomp profile as a policy document",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "bpfpolicy.io/v1"},
            "kind": {"const": "SeccompProfile"},
            "metadata": {
                "type": "object",
                "description": "`name` names the profile (DNS-1123 label)",
                "properties": {"name": {"type": "string"}, "labels": {"type": "object"},
                               "annotations": {"type": "object"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "spec": {"$ref": "#/$defs/profile", "description": "the OCI/Docker profile body"},
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "$defs": _defs(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def write() -> None:
    (SCHEMAS_DIR / "oci-seccomp.json").write_text(render(oci_schema()))
    (SCHEMAS_DIR / "seccompprofile.json").write_text(render(native_schema()))


if __name__ == "__main__":
    write()
