"""A DICOM archive (PACS) as a source of cases and a destination of results.

C-ECHO checks a node, C-STORE sends files with a presentation context per SOP class and
transfer syntax, and C-GET fetches a study into a case folder that ``hybridfuse run``
reads (files found by content, so the folder layout is flat). DICOM networking is
pynetdicom's; this module turns its outcomes into one-line errors that say which node,
which step and why, and keeps its logging off the user's terminal.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import FusionError, InputError

__all__ = [
    "Node",
    "PacsError",
    "PacsFailureError",
    "PacsRejectedError",
    "PacsTimeoutError",
    "PacsUnreachableError",
    "echo",
    "get_study",
    "parse_address",
    "send",
]

#: AE title this program calls itself unless told otherwise.
DEFAULT_AET = "HYBRIDFUSE"
#: Called AE title when none is given; Orthanc and most archives accept any by default.
DEFAULT_CALLED_AET = "ANY-SCP"
#: Most presentation contexts one association may propose (PS3.8 allows 128).
MAX_CONTEXTS = 128
#: Folder-marker kind of a fetched study: ``run --overwrite`` never replaces one.
CASE_KIND = "pacs"

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class PacsError(FusionError, RuntimeError):
    """Root of the errors of talking to a DICOM node (a processing failure, not bad input)."""


class PacsUnreachableError(PacsError):
    """No TCP connection: refused, unknown host, network unreachable."""


class PacsRejectedError(PacsError):
    """The node rejected or aborted the association (e.g. an AE title it does not know)."""


class PacsFailureError(PacsError):
    """A DICOM service answered with a failure status, or the study is not there."""


class PacsTimeoutError(PacsError):
    """No answer within ``--timeout`` seconds."""


@dataclass(frozen=True)
class Node:
    """A DICOM node to talk to: address, both AE titles and the timeout of every step."""

    host: str
    port: int
    called_aet: str = DEFAULT_CALLED_AET
    calling_aet: str = DEFAULT_AET
    timeout_s: float = 30.0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} ({self.called_aet})"


def parse_address(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) as (host, port); bad text names ``option``."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", text.strip())
    if not m:
        raise InputError(f"{option} {text!r}: expected HOST:PORT, e.g. pacs.example.org:104")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise InputError(f"{option} {text!r}: port {port} is outside 1-65535")
    return host, int(port)


def check_aet(value: str, option: str) -> str:
    """An AE title as PS3.5 allows it: 1-16 printable ASCII characters, no backslash."""
    if not 1 <= len(value.strip()) <= 16 or len(value) > 16:
        raise InputError(f"{option} {value!r}: an AE title has 1 to 16 characters")
    if any(not (32 <= ord(c) < 127) or c == "\\" for c in value):
        raise InputError(f"{option} {value!r}: only printable ASCII, no backslash")
    return value.strip()


@contextmanager
def _quiet_pynetdicom() -> Iterator[None]:
    """Keep pynetdicom's log records off the terminal unless debugging (-vv).

    Its errors ("Association Rejected", "ACSE timeout ...") are said once, in our error.
    """
    logger = logging.getLogger("pynetdicom")
    before = logger.propagate
    logger.propagate = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    try:
        yield
    finally:
        logger.propagate = before


def _check_reachable(node: Node) -> None:
    """Open and close a TCP connection first, so each network failure gets its own words."""
    try:
        with socket.create_connection((node.host, node.port), timeout=node.timeout_s):
            pass
    except socket.gaierror as exc:
        raise PacsUnreachableError(f"{node}: unknown host ({exc.strerror})") from exc
    except TimeoutError as exc:
        raise PacsTimeoutError(f"{node}: no TCP connection within {node.timeout_s:g} s") from exc
    except ConnectionRefusedError as exc:
        raise PacsUnreachableError(
            f"{node}: connection refused (nothing listens there: check the host and port)"
        ) from exc
    except OSError as exc:
        raise PacsUnreachableError(f"{node}: cannot connect ({exc.strerror or exc})") from exc


def _application_entity(node: Node):
    from pynetdicom import AE

    ae = AE(ae_title=node.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout_s
    ae.connection_timeout = node.timeout_s
    ae.maximum_associations = 1
    return ae


def _associate(ae, node: Node, what: str, **kw):
    """An established association, or the error that says why not."""
    from pynetdicom import evt

    _check_reachable(node)
    start = time.monotonic()

    def bound_reads(event) -> None:
        # pynetdicom clears the socket's timeout once connected, so a peer that sends a
        # PDU's header and then nothing blocks its reading thread for ever (and the abort
        # that follows our own timeout waits on that thread): each read gets --timeout.
        event.assoc.dul.socket.socket.settimeout(node.timeout_s)

    handlers = [*kw.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, bound_reads)]
    assoc = ae.associate(
        node.host, node.port, ae_title=node.called_aet, evt_handlers=handlers, **kw
    )
    if assoc.is_established:
        return assoc
    rsp = assoc.acceptor.primitive
    if assoc.is_rejected and rsp is not None:
        raise PacsRejectedError(
            f"{node}: association for {what} rejected ({rsp.result_str}, by the "
            f"{rsp.source_str}: {rsp.reason_str}); check --called-aet and that the PACS "
            f"knows --aet {node.calling_aet}"
        )
    if rsp is not None and getattr(rsp, "result", None) == 0:
        raise PacsRejectedError(
            f"{node}: accepted none of the presentation contexts proposed for {what}"
        )
    if time.monotonic() - start >= 0.9 * node.timeout_s:
        raise PacsTimeoutError(
            f"{node}: no answer to the association request within {node.timeout_s:g} s"
        )
    raise PacsRejectedError(f"{node}: association for {what} aborted by the peer")


def _no_response(assoc, node: Node, what: str, since: float) -> PacsError:
    """The error for a service request that got no answer: a timeout or an abort."""
    if time.monotonic() - since >= 0.9 * node.timeout_s:
        return PacsTimeoutError(f"{node}: no answer to {what} within {node.timeout_s:g} s")
    return PacsRejectedError(
        f"{node}: association aborted during {what} (an archive that does not know "
        f"--aet {node.calling_aet} may do so)"
    )


def _status_text(code: int) -> str:
    from pynetdicom.status import code_to_category

    return f"0x{code:04X} ({code_to_category(code)})"


def echo(node: Node) -> dict:
    """Verify the node answers C-ECHO; returns the status and the round trip in seconds."""
    from pynetdicom.sop_class import Verification

    with _quiet_pynetdicom():
        ae = _application_entity(node)
        ae.add_requested_context(Verification)
        start = time.monotonic()
        assoc = _associate(ae, node, "C-ECHO")
        try:
            sent = time.monotonic()
            status = assoc.send_c_echo()
            if not status or "Status" not in status:
                raise _no_response(assoc, node, "C-ECHO", sent)
            code = int(status.Status)
        finally:
            _close(assoc)
    if code != 0x0000:
        raise PacsFailureError(f"{node}: C-ECHO failed with status {_status_text(code)}")
    return {"node": str(node), "status": "0x0000", "round_trip_s": time.monotonic() - start}


def _close(assoc) -> None:
    if assoc.is_established:
        assoc.release()
    elif not (assoc.is_aborted or assoc.is_rejected):
        assoc.abort()


@dataclass(frozen=True)
class _Outgoing:
    """A file to send: what its presentation context needs, read before any network."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str

    @property
    def context_key(self) -> tuple[str, str]:
        """Files of one SOP class share a context unless compressed differently."""
        from pydicom.uid import UncompressedTransferSyntaxes

        uncompressed = self.transfer_syntax in UncompressedTransferSyntaxes
        return (self.sop_class, "uncompressed" if uncompressed else self.transfer_syntax)


def _read_outgoing(path: Path) -> _Outgoing:
    """The identity of a DICOM file to send; bad files are refused (exit 2) before sending."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from hybridfuse._dicomread import quiet_pydicom

    if not path.is_file():
        raise InputError(f"{path}: {'a folder' if path.is_dir() else 'no such file'}")
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=1024)
    except InvalidDicomError as exc:
        raise InputError(f"{path}: not a DICOM file (no 'DICM' preamble)") from exc
    except Exception as exc:  # pydicom's many ways of failing on a corrupt file
        raise InputError(f"{path}: truncated or corrupt DICOM ({type(exc).__name__})") from exc
    meta = getattr(ds, "file_meta", None)
    tsyntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    missing = [
        name
        for name, value in (
            ("SOP Class UID", sop_class),
            ("SOP Instance UID", sop_instance),
            ("Transfer Syntax UID", tsyntax),
        )
        if not value
    ]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)}; cannot be sent")
    return _Outgoing(path, sop_class, sop_instance, tsyntax)


def _context(key: tuple[str, str]):
    """A presentation context for files of one SOP class and transfer-syntax kind."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import build_context

    sop_class, tsyntax = key
    if tsyntax == "uncompressed":  # pynetdicom re-encodes between these when needed
        return build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return build_context(sop_class, [tsyntax])


def send(
    paths: Iterable[str | Path],
    node: Node,
    *,
    progress: Callable[[int, int, dict], None] | None = None,
) -> list[dict]:
    """C-STORE every file to ``node``; returns one record per file, in order.

    Every file is read before any is sent (a bad file costs nothing). Each file goes in a
    context for its SOP class and transfer syntax; files that would need more than
    :data:`MAX_CONTEXTS` contexts go over several associations. Files the node refuses
    do not stop the others: the error, raised at the end, names the first and counts them.
    """
    files = [_read_outgoing(Path(p)) for p in paths]
    keys = list(dict.fromkeys(f.context_key for f in files))
    records: list[dict] = []
    with _quiet_pynetdicom():
        for start in range(0, len(keys), MAX_CONTEXTS):
            batch = set(keys[start : start + MAX_CONTEXTS])
            todo = [f for f in files if f.context_key in batch]
            ae = _application_entity(node)
            ae.requested_contexts = [_context(k) for k in keys[start : start + MAX_CONTEXTS]]
            assoc = _associate(ae, node, "C-STORE")
            try:
                for f in todo:
                    records.append(_store_one(assoc, node, f))
                    if progress:
                        progress(len(records), len(files), records[-1])
            finally:
                _close(assoc)
    failed = [r for r in records if r["category"] == "Failure"]
    if failed:
        raise PacsFailureError(
            f"{node}: {len(failed)} of {len(files)} file(s) refused; first {failed[0]['file']}: "
            f"C-STORE status {failed[0]['status']}"
        )
    return records


def _store_one(assoc, node: Node, f: _Outgoing) -> dict:
    from pynetdicom.status import code_to_category

    from hybridfuse._dicomread import quiet_pydicom

    sent = time.monotonic()
    try:
        with quiet_pydicom():
            status = assoc.send_c_store(f.path)
    except ValueError as exc:  # no accepted context for this SOP class / transfer syntax
        raise PacsRejectedError(
            f"{node}: does not accept {f.path} ({_uid_name(f.sop_class)}, "
            f"{_uid_name(f.transfer_syntax)}): {str(exc).splitlines()[0]}"
        ) from exc
    if not status or "Status" not in status:
        raise _no_response(assoc, node, f"C-STORE of {f.path}", sent)
    code = int(status.Status)
    return {
        "file": str(f.path),
        "sop_class": _uid_name(f.sop_class),
        "sop_instance_uid": f.sop_instance,
        "status": f"0x{code:04X}",
        "category": code_to_category(code),
    }


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


#: Storage classes a fetched study is received in when the node does not list the
#: study's SOP classes (SOPClassesInStudy): what a case and its results are made of.
_CASE_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF Image
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image For Presentation
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
)


def check_study_uid(uid: str, option: str = "--study") -> str:
    """A Study Instance UID as PS3.5 writes one (digits and dots, at most 64 characters)."""
    uid = uid.strip()
    if not _UID.fullmatch(uid) or len(uid) > 64:
        raise InputError(f"{option} {uid!r}: not a DICOM UID (digits and dots, 64 at most)")
    return uid


def find_study(node: Node, study_uid: str) -> dict:
    """C-FIND the study: its SOP classes, modalities and instance count as the node says."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.SOPClassesInStudy = ""
    query.ModalitiesInStudy = ""
    query.NumberOfStudyRelatedInstances = ""
    matches = []
    with _quiet_pynetdicom():
        ae = _application_entity(node)
        ae.add_requested_context(FIND)
        assoc = _associate(ae, node, "C-FIND")
        try:
            since = time.monotonic()
            for status, identifier in assoc.send_c_find(query, FIND):
                if not status or "Status" not in status:
                    raise _no_response(assoc, node, "C-FIND", since)
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    matches.append(identifier)
                elif code != 0x0000:
                    raise PacsFailureError(
                        f"{node}: C-FIND failed with status {_status_text(code)}"
                    )
                since = time.monotonic()
        finally:
            _close(assoc)
    if not matches:
        raise PacsFailureError(f"{node}: no study {study_uid} there")
    found = matches[0]
    n = found.get("NumberOfStudyRelatedInstances")
    return {
        "sop_classes": [str(u) for u in _as_list(found.get("SOPClassesInStudy"))],
        "modalities": [str(m) for m in _as_list(found.get("ModalitiesInStudy"))],
        "n_instances": int(n) if n not in (None, "") else None,
    }


def _as_list(value) -> list:
    """A DICOM value as a list: pydicom returns one value bare and several as a MultiValue."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


class _Receiver:
    """The C-STORE handler of a C-GET: each instance written atomically into ``folder``."""

    def __init__(self, folder: Path, progress, expected: int | None):
        self.folder, self.progress, self.expected = folder, progress, expected
        self.files: list[dict] = []
        self.errors: list[str] = []

    def __call__(self, event) -> int:
        try:
            record = self._write(event)
        except Exception as exc:  # pynetdicom's thread: the reason is said once, at the end
            self.errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return 0xA700  # Out of resources: the node counts it as a failed sub-operation
        self.files.append(record)
        if self.progress:
            self.progress(len(self.files), self.expected, record)
        return 0x0000

    def _write(self, event) -> dict:
        from hybridfuse._dicomread import quiet_pydicom
        from hybridfuse._safeio import write_bytes
        from hybridfuse.dicom import parse_number

        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        if not _UID.fullmatch(sop_uid) or len(sop_uid) > 64:
            raise PacsFailureError(f"received an instance with an invalid UID {sop_uid[:70]!r}")
        with quiet_pydicom():
            ds = event.dataset
            modality = re.sub(r"[^A-Za-z0-9]", "", str(ds.get("Modality", "") or ""))[:8]
            series = parse_number(ds.get("SeriesNumber"))
            instance = parse_number(ds.get("InstanceNumber"))
            data = event.encoded_dataset(include_meta=True)
        name = f"{modality or 'OT'}_{_index(series):04d}_{_index(instance):05d}_{sop_uid}.dcm"
        if (self.folder / name).exists():
            raise PacsFailureError(f"instance {sop_uid} received twice")
        write_bytes(self.folder / name, data)
        return {
            "file": name,
            "modality": modality or None,
            "sop_class": _uid_name(str(event.request.AffectedSOPClassUID)),
            "sop_instance_uid": sop_uid,
        }


def _index(value: float | None) -> int:
    """A series or instance number fit for a file name (0 when absent or odd)."""
    return int(value) if value is not None and 0 <= value < 10_000 else 0


def get_study(
    study_uid: str,
    node: Node,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    move_port: int | None = None,
    progress: Callable[[int, int | None, dict], None] | None = None,
) -> dict:
    """C-GET a study into ``out_dir``, a case folder ``hybridfuse run`` reads as it is.

    With ``move_port``, C-MOVE instead: the node sends the study to our AE title, which
    it must map to this machine and that port, where a storage service listens meanwhile.
    Every instance is written as ``MODALITY_SERIES_INSTANCE_SOPUID.dcm`` in one flat
    folder (``run`` finds fluoroscopy, ultrasound and dose report by content). The folder
    is built under a temporary name and appears only when every instance has arrived;
    its marker keeps ``run --overwrite`` off it. Returns what arrived and the case found.
    """
    from hybridfuse._safeio import atomic_directory, check_out_target

    from .pipeline import case_from_folder

    study_uid = check_study_uid(study_uid)
    out_dir = Path(out_dir)
    check_out_target(out_dir, overwrite, CASE_KIND)  # a bad --out costs no network
    study = find_study(node, study_uid)
    classes = list(dict.fromkeys(study["sop_classes"] or _CASE_STORAGE))[: MAX_CONTEXTS - 1]
    with atomic_directory(out_dir, overwrite=overwrite, kind=CASE_KIND) as tmp:
        receiver = _Receiver(tmp, progress, study["n_instances"])
        if move_port is None:
            final = _c_get(node, study_uid, classes, receiver)
        else:
            final = _c_move(node, study_uid, classes, receiver, move_port)
        _check_get_outcome(
            node, study_uid, final, receiver, "C-GET" if move_port is None else "C-MOVE"
        )
    spec = case_from_folder(out_dir)
    return {
        "node": str(node),
        "study_instance_uid": study_uid,
        "out": str(out_dir),
        "files": receiver.files,
        "case": {
            "fluoroscopy": [Path(p).name for p in spec.fluoro],
            "ultrasound": [Path(p).name for p in spec.ultrasound],
            "dose_report": Path(spec.rdsr).name if spec.rdsr else None,
            "runnable": bool(spec.fluoro and spec.ultrasound),
        },
    }


#: Compressed transfer syntaxes a fetched instance may keep (pydicom decodes each): one
#: context apiece, since the node picks a context's syntax before it knows the files.
_KEPT_SYNTAXES = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


def _storage_contexts(classes: list[str]) -> list:
    """Contexts to receive ``classes`` in: uncompressed for each, then each kept syntax.

    Compressed contexts stop at :data:`MAX_CONTEXTS`; the node then converts the rest
    to an uncompressed syntax (Orthanc does), which changes the encoding, not the pixels.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import build_context

    plain = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts = [build_context(uid, plain) for uid in classes]
    for ts in _KEPT_SYNTAXES:
        for uid in classes:
            if len(contexts) < MAX_CONTEXTS - 1:
                contexts.append(build_context(uid, [ts]))
    return contexts


def _c_get(node: Node, study_uid: str, classes: list[str], receiver: _Receiver) -> int:
    """Run the C-GET with a storage context (SCP role) per class; the final status code."""
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with _quiet_pynetdicom():
        ae = _application_entity(node)
        ae.add_requested_context(GET)
        ae.requested_contexts = [ae.requested_contexts[0], *_storage_contexts(classes)]
        roles = [build_role(uid, scp_role=True) for uid in classes]
        handlers = [(evt.EVT_C_STORE, receiver)]
        assoc = _associate(ae, node, "C-GET", ext_neg=roles, evt_handlers=handlers)
        final = None
        try:
            since = time.monotonic()
            for status, _identifier in assoc.send_c_get(query, GET):
                if not status or "Status" not in status:
                    raise _no_response(assoc, node, "C-GET", since)
                final = status
                since = time.monotonic()
        finally:
            _close(assoc)
    return final


def _c_move(node: Node, study_uid: str, classes: list[str], receiver: _Receiver, port: int) -> int:
    """Run a C-MOVE to our own AE title while a storage service listens on ``port``."""
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, *_KEPT_SYNTAXES]
    with _quiet_pynetdicom():
        ae = _application_entity(node)
        ae.maximum_associations = 4  # the node may send over more than one
        for uid in classes:  # as acceptor, the node's proposed syntax is taken as it is
            ae.add_supported_context(uid, syntaxes)
        try:
            server = ae.start_server(
                ("", port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver)]
            )
        except OSError as exc:
            raise InputError(f"--move-port {port}: cannot listen ({exc.strerror})") from exc
        final = None
        try:
            ae.add_requested_context(MOVE)
            assoc = _associate(ae, node, "C-MOVE")
            try:
                since = time.monotonic()
                for status, _identifier in assoc.send_c_move(query, node.calling_aet, MOVE):
                    if not status or "Status" not in status:
                        raise _no_response(assoc, node, "C-MOVE", since)
                    final = status
                    since = time.monotonic()
            finally:
                _close(assoc)
        finally:
            server.shutdown()
    return final


def _check_get_outcome(
    node: Node, study_uid: str, final, receiver: _Receiver, what: str = "C-GET"
) -> None:
    """Refuse a study that did not arrive whole: nothing is then left in the case folder."""
    if final is None:
        raise PacsFailureError(f"{node}: {what} of study {study_uid} got no final status")
    code = int(final.Status)
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    if receiver.errors:
        raise PacsFailureError(
            f"{node}: {what} of study {study_uid}: {len(receiver.errors)} instance(s) could "
            f"not be written; first: {receiver.errors[0]}"
        )
    if code not in (0x0000,) or failed:
        raise PacsFailureError(
            f"{node}: {what} of study {study_uid} ended with status {_status_text(code)}"
            + (f", {failed} instance(s) not sent" if failed else "")
        )
    if not receiver.files:
        raise PacsFailureError(f"{node}: {what} of study {study_uid} sent no instance")
