"""pii: e-mails, IBANs, card numbers and phone numbers are replaced; dates,
versions, IPs, hashes, amounts and checksum-invalid look-alikes are kept."""
from __future__ import annotations

import copy
from collections import Counter

import pytest

from taskling.curation.pii import KINDS, scrub, scrub_example, scrub_value


def only(text: str, kind: str, token: str) -> None:
    """`text` in a sentence comes back as exactly one `token`, counted once."""
    out, counts = scrub(f"Contact: {text}, thanks.")
    assert out == f"Contact: {token}, thanks.", text
    assert counts == Counter({kind: 1}), text


def kept(text: str) -> None:
    out, counts = scrub(f"See {text} here.")
    assert out == f"See {text} here.", text
    assert counts == Counter(), text


def test_kinds():
    assert KINDS == ("email", "phone", "iban", "card")


@pytest.mark.parametrize("text", [
    "john.doe@example.com", "first.last+news@mail.example.co.uk", "a-b_c@sub-domain.example.org",
    "USER.99@Example.IO", "x@y.museum",
])
def test_email_replaced(text):
    only(text, "email", "[EMAIL]")


@pytest.mark.parametrize("text", [
    "@handle", "user@localhost", "john.doe at example.com", "a@b", "pip install pkg@1.2",
])
def test_email_lookalikes_kept(text):
    kept(text)


def test_email_at_sentence_end_keeps_the_full_stop():
    assert scrub("Write to first.last@sub.domain.org.")[0] == "Write to [EMAIL]."


@pytest.mark.parametrize("text", [
    "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "de89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432", "NL91ABNA0417164300",
    "FR14 2004 1010 0505 0001 3M02 606", "BE68 5390 0754 7034", "NO9386011117947",
])
def test_iban_replaced(text):
    only(text, "iban", "[IBAN]")


@pytest.mark.parametrize("text", [
    "DE89 3704 0044 0532 0130 01",      # one digit changed: mod-97 fails
    "GB82 WEST 1234 5698 7654 33",
    "BE68 5390 0754 7035",
    "DE89 3704 0044 0532 0130",         # too short for Germany
    "XX89 3704 0044 0532 0130 00",      # no such IBAN country
    "de12345678901234567890123456789a",  # a hex hash that starts like an IBAN
    "AB12CD34EF56",
])
def test_iban_lookalikes_kept(text):
    kept(text)


def test_iban_running_into_the_next_word_is_cut_at_the_word():
    out, counts = scrub("to BE68 5390 0754 7034 Gent today")
    assert out == "to [IBAN] Gent today" and counts == Counter(iban=1)


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5555 5555 5555 4444",
    "3782 822463 10005", "378282246310005", "30569309025904", "6011 1111 1111 1117",
    "2223 0031 2200 3222",
])
def test_card_replaced(text):
    only(text, "card", "[CARD]")


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1112", "4111111111111112", "5555-5555-5555-4445",  # Luhn fails
    "1732364400000",                      # epoch milliseconds
    "order-4111111111111111", "#4111111111111111", "x4111111111111111",
    "41111111111111111111",               # 20 digits
    "4111 1111  1111 1111",               # irregular spacing: not one number
])
def test_card_lookalikes_kept(text):
    kept(text)


def test_card_followed_by_another_number():
    out, counts = scrub("card 4111 1111 1111 1111 2027 on file")
    assert out == "card [CARD] 2027 on file" and counts == Counter(card=1)


@pytest.mark.parametrize("text", [
    "+44 20 7946 0958", "+44 (0)20 7946 0958", "+1 (555) 123-4567", "+1-555-123-4567",
    "+1.555.123.4567", "+15551234567", "+49 30 12345678", "+49 (0)30 1234567-89",
    "+33 1 23 45 67 89", "+91 98765 43210",
    "(030) 1234567", "(555) 123-4567", "(555)123-4567", "1 (555) 123-4567",
    "555-123-4567", "555.123.4567", "555 123 4567", "1-800-555-1234",
    "030 12345678", "020 7946 0958", "01 23 45 67 89", "06.12.34.56.78", "0171/1234567",
    "07700 900123", "0800-123-4567", "0044 20 7946 0958",
])
def test_phone_replaced(text):
    only(text, "phone", "[PHONE]")


@pytest.mark.parametrize("text", [
    "2026-11-23", "2026-11-23T10:15:30+01:00", "2026-11-23T10:15:30.123456Z", "20261123T101530Z",
    "2026-11-23 14:30", "12.11.2026 09:30", "01.02.2026", "03/04/2026", "2026/11/23",
    "10:15:30", "12:30:45.123",
    "1.2.3", "3.11.7", "v2.10.12345", "10.0.19041.1234",
    "192.168.100.200", "10.0.0.1:8080", "2001:db8::1",
    "2026", "1999 2000 2001 2002", "between 2019-2024",
    "abc12345678", "id_0301234567", "report-030-1234567.pdf", "CVE-2024-12345",
    "3f7a9c0b1d2e4f5a6b7c8d9e0f1a2b3c4d5e6f70", "e3b0c44298fc1c149afbf4c8996fb924",
    "1,234,567.89", "3,000,000,000", "1 234 567", "$5551234567", "1700000000.123456",
    "#12345", "#030-1234567", "order 0301234567", "ticket 12345678", "id=0301 234567",
    "555-1234", "123", "ISBN 978-3-16-148410-0", "ZIP 90210-1234", "pages 100-200",
])
def test_phone_lookalikes_kept(text):
    kept(text)


def test_invalid_iban_is_not_half_read_as_a_phone():
    kept("BE68 5390 0754 7035")


def test_counts_every_kind_in_one_text():
    text = ("Mail a@b.com or c.d@e.org, call +44 20 7946 0958 or 555-123-4567, "
            "pay to DE89 3704 0044 0532 0130 00 with 4111 1111 1111 1111 on 2026-11-23.")
    out, counts = scrub(text)
    assert counts == Counter(email=2, phone=2, iban=1, card=1)
    assert out == ("Mail [EMAIL] or [EMAIL], call [PHONE] or [PHONE], "
                   "pay to [IBAN] with [CARD] on 2026-11-23.")


def test_clean_text_is_returned_as_is_with_no_counts():
    text = "Release 3.11.7 shipped on 2026-11-23 to 192.168.1.10 (order #12345)."
    assert scrub(text) == (text, Counter())
    assert scrub("") == ("", Counter())


def test_scrub_value_recurses_into_values_never_keys():
    value = {
        "john@example.com": "owner",
        "contact": {"email": "jane@example.com", "phones": ["+44 20 7946 0958", "555-123-4567"]},
        "iban": "DE89 3704 0044 0532 0130 00",
        "amount": 12.5, "paid": True, "note": None, "count": 5551234567,
    }
    out, counts = scrub_value(value)
    assert out == {
        "john@example.com": "owner",
        "contact": {"email": "[EMAIL]", "phones": ["[PHONE]", "[PHONE]"]},
        "iban": "[IBAN]",
        "amount": 12.5, "paid": True, "note": None, "count": 5551234567,
    }
    assert counts == Counter(email=1, phone=2, iban=1)
    assert value["contact"]["phones"] == ["+44 20 7946 0958", "555-123-4567"]


def test_scrub_value_leaves_other_types_alone():
    for v in (None, 3, 2.5, True):
        assert scrub_value(v) == (v, Counter())


def test_scrub_example_scrubs_input_and_output_only_and_copies():
    ex = {"id": "gen-00001", "input": "Reach me at jane@example.com or 030 12345678.",
          "output": {"email": "jane@example.com"}, "label": "a@b.com",
          "provenance": [{"chunk": "doc.md:3", "path": "doc.md"}]}
    before = copy.deepcopy(ex)
    out, counts = scrub_example(ex)
    assert ex == before
    assert out is not ex and out["output"] is not ex["output"]
    assert out["input"] == "Reach me at [EMAIL] or [PHONE]."
    assert out["output"] == {"email": "[EMAIL]"}
    assert out["label"] == "a@b.com" and out["id"] == "gen-00001"
    assert out["provenance"] == before["provenance"]
    assert counts == Counter(email=2, phone=1)


def test_scrub_example_without_output():
    out, counts = scrub_example({"input": "no pii here"})
    assert out == {"input": "no pii here"} and counts == Counter()
