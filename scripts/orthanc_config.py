"""Write an Orthanc configuration for development, tests and compose (docs/integration.md).

Orthanc (Debian package `orthanc`) listens for DICOM as ORTHANC and forwards every CR/DX film it stores
to the portal's receiver (a DicomModalities entry named "portal"), by the Lua hook below; the portal's
own results (SR, Secondary Capture) are other modalities and are not sent back.

    python scripts/orthanc_config.py --dir var/orthanc [--http-port 8042] [--dicom-port 4242]
        [--portal-host 127.0.0.1] [--portal-port 11112] [--portal-ae PNEUMOPORTAL]

then `Orthanc var/orthanc/config`. No Django here: the tests and scripts/ensure-services.sh use it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORWARD_LUA = """-- Chest films go to the portal's DICOM receiver as soon as they are stored.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if modality == 'CR' or modality == 'DX' then
    SendToModality(instanceId, 'portal')
  end
end
"""


def write_config(
    directory: Path,
    *,
    http_port: int = 8042,
    dicom_port: int = 4242,
    aet: str = "ORTHANC",
    portal_ae: str = "PNEUMOPORTAL",
    portal_host: str = "127.0.0.1",
    portal_port: int = 11112,
    remote_access: bool = False,
) -> Path:
    """Writes <directory>/config/{orthanc.json,forward.lua}; storage in <directory>/db. Returns config/."""
    config = directory / "config"
    config.mkdir(parents=True, exist_ok=True)
    (directory / "db").mkdir(exist_ok=True)
    (config / "forward.lua").write_text(FORWARD_LUA, encoding="utf-8")
    settings = {
        "Name": "Pneumonia portal PACS",
        "StorageDirectory": str((directory / "db").resolve()),
        "IndexDirectory": str((directory / "db").resolve()),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        # Development and tests: local only, no login. A hospital's Orthanc has its own settings.
        "RemoteAccessAllowed": remote_access,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomModalities": {"portal": [portal_ae, portal_host, portal_port]},
        "LuaScripts": [str((config / "forward.lua").resolve())],
        "Plugins": ["/usr/share/orthanc/plugins"],
        "HttpDescribeErrors": True,
        "StableAge": 5,
    }
    (config / "orthanc.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--http-port", type=int, default=8042)
    parser.add_argument("--dicom-port", type=int, default=4242)
    parser.add_argument("--aet", default="ORTHANC")
    parser.add_argument("--portal-ae", default="PNEUMOPORTAL")
    parser.add_argument("--portal-host", default="127.0.0.1")
    parser.add_argument("--portal-port", type=int, default=11112)
    parser.add_argument("--remote-access", action="store_true", help="listen beyond localhost (compose)")
    args = parser.parse_args()
    print(write_config(args.dir, http_port=args.http_port, dicom_port=args.dicom_port, aet=args.aet,
                       portal_ae=args.portal_ae, portal_host=args.portal_host, portal_port=args.portal_port,
                       remote_access=args.remote_access))  # fmt: skip


if __name__ == "__main__":
    main()
