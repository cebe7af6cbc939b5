"""
Scan one TLS server with sslyze's Python API and print what it accepts, as JSON.

Run by tests/integration/test_router_tls.py with the Python of the sslyze venv
(`make venv` builds it from requirements-sslyze.txt: sslyze pins a cryptography older than
the project's, so it cannot live in the project's venv). Imports nothing of Director's.

    python sslyze_scan.py <ip address> <port> <server name (SNI)>

Only the scans that talk to the server alone: no certificate validation (that would fetch
OCSP and CRLs from wherever the certificate points).
"""

from __future__ import annotations

import json
import sys
from traceback import TracebackException
from typing import Any

from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

PROTOCOLS = {
    "ssl_2_0": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "ssl_3_0": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "tls_1_1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "tls_1_2": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "tls_1_3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}
OTHERS = {
    ScanCommand.ELLIPTIC_CURVES,
    ScanCommand.SESSION_RESUMPTION,
    ScanCommand.TLS_COMPRESSION,
    ScanCommand.HEARTBLEED,
    ScanCommand.OPENSSL_CCS_INJECTION,
    ScanCommand.TLS_FALLBACK_SCSV,
}


def _text(trace: object) -> str:
    return "".join(trace.format()) if isinstance(trace, TracebackException) else str(trace)


def scan(ip_address: str, port: int, server_name: str) -> dict[str, Any]:
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(server_name, port, ip_address),
        scan_commands={*PROTOCOLS.values(), *OTHERS},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    if result.scan_status != ServerScanStatusEnum.COMPLETED or result.scan_result is None:
        trace = result.connectivity_error_trace
        return {"error": _text(trace) if trace else str(result.scan_status)}
    attempts = result.scan_result
    report: dict[str, Any] = {"errors": {}}

    def outcome(command: ScanCommand) -> Any:
        attempt = getattr(attempts, command.value)
        if attempt.result is None:
            trace = attempt.error_trace
            report["errors"][command.value] = _text(trace) if trace else str(attempt.error_reason)
        return attempt.result

    accepted: dict[str, list[dict[str, Any]]] = {}
    for protocol, command in PROTOCOLS.items():
        suites = outcome(command)
        accepted[protocol] = [
            {
                "name": s.cipher_suite.name,
                "openssl_name": s.cipher_suite.openssl_name,
                "anonymous": s.cipher_suite.is_anonymous,
                "key_size": s.cipher_suite.key_size,
            }
            for s in (suites.accepted_cipher_suites if suites else [])
        ]
    report["accepted"] = accepted
    curves = outcome(ScanCommand.ELLIPTIC_CURVES)
    report["curves"] = sorted(c.name for c in (curves.supported_curves or [])) if curves else None
    resumption = outcome(ScanCommand.SESSION_RESUMPTION)
    if resumption is not None:
        report["session_id_resumption"] = resumption.session_id_resumption_result.value
        report["ticket_resumption"] = resumption.tls_ticket_resumption_result.value
    compression = outcome(ScanCommand.TLS_COMPRESSION)
    report["compression"] = compression.supports_compression if compression else None
    heartbleed = outcome(ScanCommand.HEARTBLEED)
    report["heartbleed"] = heartbleed.is_vulnerable_to_heartbleed if heartbleed else None
    ccs = outcome(ScanCommand.OPENSSL_CCS_INJECTION)
    report["ccs_injection"] = ccs.is_vulnerable_to_ccs_injection if ccs else None
    fallback = outcome(ScanCommand.TLS_FALLBACK_SCSV)
    report["fallback_scsv"] = fallback.supports_fallback_scsv if fallback else None
    return report


if __name__ == "__main__":
    ip, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    json.dump(scan(ip, port, name), sys.stdout, indent=1)
