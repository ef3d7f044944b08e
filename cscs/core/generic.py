"""The generic commands and events every CSC has (ICD §3)."""

from __future__ import annotations

from cscs.core.schema import (
    ANY_WORKING_STATE,
    CommandSpec,
    EventSpec,
    Interface,
    NoParams,
    Payload,
)

__all__ = [
    "AUTH_LIST",
    "CONFIGURATIONS_AVAILABLE",
    "CONFIGURATION_APPLIED",
    "DISABLE",
    "ENABLE",
    "ERROR_CODE",
    "ERROR_TASK_FAILED",
    "EXIT_CONTROL",
    "GENERIC",
    "HEARTBEAT",
    "LOG_LEVEL",
    "LOG_MESSAGE",
    "SET_AUTH_LIST",
    "SET_LOG_LEVEL",
    "SOFTWARE_VERSIONS",
    "STANDBY",
    "START",
    "SUMMARY_STATE",
    "AuthListPayload",
    "ConfigurationApplied",
    "ConfigurationsAvailable",
    "ErrorCode",
    "Heartbeat",
    "LogLevel",
    "LogMessage",
    "SetAuthListParams",
    "SetLogLevelParams",
    "SoftwareVersions",
    "StartParams",
    "SummaryState",
]

#: ``errorCode`` of any CSC one of whose tasks failed in a way nobody planned for (a
#: bug): the report names the task, the traceback says where (cscs.core.tasks).
ERROR_TASK_FAILED = 1001

# ---- command parameters ----------------------------------------------------------------


class StartParams(Payload):
    configurationOverride: str = ""


class SetLogLevelParams(Payload):
    level: int


class SetAuthListParams(Payload):
    authorizedUsers: str = ""
    nonAuthorizedCSCs: str = ""


# ---- event payloads ----------------------------------------------------------------------


class SummaryState(Payload):
    summaryState: int
    name: str
    lost: bool = False


class Heartbeat(Payload):
    pass


class ErrorCode(Payload):
    errorCode: int
    errorReport: str
    traceback: str = ""


class LogMessage(Payload):
    name: str
    level: int
    message: str
    traceback: str = ""
    filePath: str = ""
    functionName: str = ""
    lineNumber: int = 0


class SoftwareVersions(Payload):
    cscVersion: str
    xmlVersion: str
    subsystemVersions: str = ""


class ConfigurationsAvailable(Payload):
    overrides: str
    version: str
    url: str


class ConfigurationApplied(Payload):
    configurations: str
    version: str
    url: str


class AuthListPayload(Payload):
    authorizedUsers: str
    nonAuthorizedCSCs: str


class LogLevel(Payload):
    level: int


# ---- declarations ------------------------------------------------------------------------

START = CommandSpec("start", StartParams, "STANDBY → DISABLED, applying configuration.", None)
ENABLE = CommandSpec("enable", NoParams, "DISABLED → ENABLED.", None)
DISABLE = CommandSpec("disable", NoParams, "ENABLED → DISABLED.", None)
STANDBY = CommandSpec("standby", NoParams, "DISABLED or FAULT → STANDBY.", None)
EXIT_CONTROL = CommandSpec(
    "exitControl", NoParams, "STANDBY → OFFLINE; the process then exits cleanly.", None
)
SET_LOG_LEVEL = CommandSpec(
    "setLogLevel",
    SetLogLevelParams,
    "Set the level (Python logging levels) of messages logged and published as logMessage.",
    ANY_WORKING_STATE,
)
SET_AUTH_LIST = CommandSpec(
    "setAuthList",
    SetAuthListParams,
    "Replace, or with a leading +/- extend or shrink, the authorization lists (ICD §4).",
    ANY_WORKING_STATE,
)

SUMMARY_STATE = EventSpec(
    "summaryState",
    SummaryState,
    "The summary state; also the last will (`lost: true`, seq 0) of a CSC that vanished.",
    retained=True,
)
HEARTBEAT = EventSpec("heartbeat", Heartbeat, "Published every second.", qos=0)
ERROR_CODE = EventSpec(
    "errorCode", ErrorCode, "Why the CSC went to FAULT; published before it.", retained=True
)
LOG_MESSAGE = EventSpec("logMessage", LogMessage, "A log record at or above the CSC's log level.")
SOFTWARE_VERSIONS = EventSpec(
    "softwareVersions",
    SoftwareVersions,
    "Software and interface (ICD) versions.",
    retained=True,
)
CONFIGURATIONS_AVAILABLE = EventSpec(
    "configurationsAvailable",
    ConfigurationsAvailable,
    "Names of the configuration overrides `start` accepts.",
    retained=True,
)
CONFIGURATION_APPLIED = EventSpec(
    "configurationApplied",
    ConfigurationApplied,
    "The configuration files applied by the last `start`, in layer order.",
    retained=True,
)
AUTH_LIST = EventSpec(
    "authList", AuthListPayload, "The authorization lists in force.", retained=True
)
LOG_LEVEL = EventSpec("logLevel", LogLevel, "The log level in force.", retained=True)

GENERIC = Interface(
    name="(every CSC)",
    doc="Generic commands and events of ICD §3.",
    commands=(START, ENABLE, DISABLE, STANDBY, EXIT_CONTROL, SET_LOG_LEVEL, SET_AUTH_LIST),
    events=(
        SUMMARY_STATE,
        HEARTBEAT,
        ERROR_CODE,
        LOG_MESSAGE,
        SOFTWARE_VERSIONS,
        CONFIGURATIONS_AVAILABLE,
        CONFIGURATION_APPLIED,
        AUTH_LIST,
        LOG_LEVEL,
    ),
)
