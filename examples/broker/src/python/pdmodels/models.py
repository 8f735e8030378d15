"""Plain dataclass models (the real broker uses pydantic; this stays stdlib)."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class PhysicalDevice:
    uid: int
    name: str
    source_name: str = "ttn"
    source_ids: Dict[str, str] = field(default_factory=dict)


@dataclass
class LogicalDevice:
    uid: int
    name: str
    location: Optional[str] = None


@dataclass
class Mapping:
    pd: PhysicalDevice
    ld: LogicalDevice


@dataclass
class Message:
    p_uid: int
    timestamp: str
    values: List[Dict[str, object]] = field(default_factory=list)
