"""The few pieces of a SentencePiece `.model` file (a serialized ModelProto) that minibert reads or changes itself,
in protobuf's wire format, so that no protobuf package is needed.

sentencepiece_model.proto: ModelProto.pieces = 1, trainer_spec = 2, normalizer_spec = 3; SentencePiece.piece = 1,
score = 2, type = 3; TrainerSpec.model_type = 3, treat_whitespace_as_suffix = 24, byte_fallback = 35;
NormalizerSpec.name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
escape_whitespaces = 5.
"""

from __future__ import annotations

from collections.abc import Iterator

MODEL_PIECES, MODEL_TRAINER_SPEC, MODEL_NORMALIZER_SPEC = 1, 2, 3
NORMALIZER_ADD_DUMMY_PREFIX = 3
VARINT, LENGTH_DELIMITED = 0, 2


def varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint starting at data[i], and the index after it."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: an int for varints, the bytes for the other wire types."""
    for number, _, value, _ in raw_fields(data):
        yield number, value


def raw_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes, bytes]]:
    """(field number, wire type, value, the field's bytes as stored) of a protobuf message."""
    i = 0
    while i < len(data):
        start = i
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, i = varint(data, i)
        elif wire == LENGTH_DELIMITED:
            size, i = varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield number, wire, value, data[start:i]


def without_dummy_prefix(proto: bytes) -> bytes:
    """The model `proto` with NormalizerSpec.add_dummy_prefix false: it then reads a text as the continuation of
    a word (no "▁" in front of it), as a character inside running text is read.

    Protobuf keeps the last value of a repeated scalar field, so the normalizer message gets `add_dummy_prefix =
    0` appended; the ModelProto is written back field by field with that message's new length.
    """
    out = bytearray()
    found = False
    for number, wire, value, stored in raw_fields(proto):
        if number == MODEL_NORMALIZER_SPEC and wire == LENGTH_DELIMITED:
            spec = bytes(value) + encode_varint(NORMALIZER_ADD_DUMMY_PREFIX << 3 | VARINT) + encode_varint(0)
            out += encode_varint(number << 3 | wire) + encode_varint(len(spec)) + spec
            found = True
        else:
            out += stored
    if not found:  # no normalizer spec at all: one holding only the flag
        spec = encode_varint(NORMALIZER_ADD_DUMMY_PREFIX << 3 | VARINT) + encode_varint(0)
        out += encode_varint(MODEL_NORMALIZER_SPEC << 3 | LENGTH_DELIMITED) + encode_varint(len(spec)) + spec
    return bytes(out)
