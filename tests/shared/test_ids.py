from shared import ids


def test_ids_are_fixed_width_hex() -> None:
    value = ids.mint_id("key")
    assert ids.is_valid_id(value)
    assert len(value) == ids.ID_LENGTH


def test_string_order_is_time_order_across_digit_boundaries() -> None:
    # 0xfffff... -> 0x100000... changes the leading digits: fixed width keeps order.
    earlier = ids.format_id(0xFFFFFFFFFFF, "a")
    later = ids.format_id(0x100000000000, "b")
    assert earlier < later
    assert ids.id_micros(later) == 0x100000000000


def test_ids_strictly_increase_within_a_process_even_if_the_clock_stalls() -> None:
    minted = [ids.mint_id("same", now_micros=1_000) for _ in range(100)]
    assert minted == sorted(minted)
    assert len(set(minted)) == 100


def test_event_key_is_stable_and_per_user() -> None:
    assert ids.event_key("u1", "e1") == ids.event_key("u1", "e1")
    assert ids.event_key("u1", "e1") != ids.event_key("u2", "e1")
    assert "/" not in ids.event_key("u/1", "e/1")


def test_invalid_ids_are_recognised() -> None:
    assert not ids.is_valid_id("../../etc")
    assert not ids.is_valid_id("0" * 23)
    assert not ids.is_valid_id("G" * 24)
