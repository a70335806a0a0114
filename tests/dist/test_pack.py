"""2-bit (and 1/4/8-bit) packing: exact sizes, round trips, the byte layout, errors."""

from __future__ import annotations

import math

import pytest
import torch

from cimkit.dist import pack_bits, pack_ternary, packed_size, unpack_bits, unpack_ternary
from cimkit.errors import ConfigError, DataError


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 7, 8, 9, 1001])
def test_round_trip_and_exact_size(bits: int, n: int, gen: torch.Generator) -> None:
    codes = torch.randint(0, 2**bits, (n,), generator=gen, dtype=torch.int64)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_size(n, bits) == math.ceil(n * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, n).long(), codes)


def test_ternary_four_values_per_byte_and_layout() -> None:
    t = torch.tensor([-1, 0, 1, 1, 1])
    packed = pack_ternary(t)
    # codes t+1 = [0, 1, 2, 2 | 2]: byte 0 = 0 + 1·4 + 2·16 + 2·64 = 164, byte 1 = 2 (high bits zero)
    assert packed.tolist() == [164, 2]
    assert torch.equal(unpack_ternary(packed, 5), t.to(torch.int8))


def test_ternary_round_trip_any_shape_and_float_input(gen: torch.Generator) -> None:
    t = torch.randint(-1, 2, (7, 13), generator=gen)
    packed = pack_ternary(t.float())
    assert packed.numel() == math.ceil(91 / 4) == 23
    assert torch.equal(unpack_ternary(packed, 91).view(7, 13), t.to(torch.int8))


def test_unpack_keeps_leading_dims(gen: torch.Generator) -> None:
    rows = torch.randint(-1, 2, (3, 10), generator=gen)
    stacked = torch.stack([pack_ternary(r) for r in rows])  # (3, 3) as gathered from 3 ranks
    assert torch.equal(unpack_ternary(stacked, 10), rows.to(torch.int8))


def test_errors() -> None:
    with pytest.raises(DataError, match="-1, 0 or"):
        pack_ternary(torch.tensor([0, 2]))
    with pytest.raises(DataError, match="-1, 0 or"):
        pack_ternary(torch.tensor([0.5]))
    with pytest.raises(DataError, match="need 2 bytes"):
        unpack_ternary(torch.zeros(3, dtype=torch.uint8), 5)
    with pytest.raises(DataError, match="uint8"):
        unpack_bits(torch.zeros(2, dtype=torch.int32), 2, 5)
    with pytest.raises(ConfigError, match="bits: 3"):
        pack_bits(torch.zeros(4, dtype=torch.uint8), 3)
