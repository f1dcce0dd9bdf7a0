#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere).

Input layouts are described at the top of each fuzz_targets/*.rs file.
Seeds are named seed-*; files cargo fuzz adds are named by their SHA-1.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES = ["/create", "/login", "/logout", "/delete", "/contacts", "/add_contact",
          "/remove_contact", "/contact_requests", "/accept_contact", "/decline_contact"]
AUTH = '{"id":"7","token":"tok"}'


def req(header, route, data):
    h, r, d = (s.encode() if isinstance(s, str) else s for s in (header, route, data))
    return struct.pack(">iii", len(h), len(r), len(d)) + h + r + d


def resp(status, data):
    d = data.encode()
    return struct.pack(">ii", status, len(d)) + d


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# frame_decoder: selector byte (low 7 bits: split point, high bit: tiny limits) + stream.
login = req("", "/login", '{"user_mail":"a@b.c","pass":"pw"}')
contacts = req(AUTH, "/contacts", "")
frames = {
    "login": login,
    "contacts-header": contacts,
    "pipelined": login + contacts + req("", "/r2", "") + login[:7],
    "partial": contacts[:20],
    "negative-header": struct.pack(">i", -1),
    "negative-data": struct.pack(">iii", 0, 6, -5) + b"/login",
    "oversized-data": struct.pack(">iii", 0, 6, 0x7FFFFFFF),
    "oversized-route": struct.pack(">iii", 0, 300, 0),
    "response-200": resp(200, '{"id":"1","name":"a","email":"a@b.c","token":"t"}'),
    "response-403-pipelined": resp(403, '{"error":"no"}') + resp(200, "") + resp(401, ""),
    "response-negative": struct.pack(">ii", 200, -1),
}
for name, stream in frames.items():
    write("frame_decoder", name, bytes([0x40]) + stream)
write("frame_decoder", "tiny-limits-header", bytes([0xC0]) + req("x" * 65, "/r", ""))
write("frame_decoder", "tiny-limits-ok", bytes([0x81]) + req("h" * 64, "r" * 16, "d" * 128))


# request_parse: route selector, u16 header length, header, [route len, route], data.
def rp(route, header="", data=""):
    h, d = header.encode(), data.encode()
    if route in ROUTES:
        return bytes([ROUTES.index(route)]) + struct.pack(">H", len(h)) + h + d
    r = route.encode()
    return bytes([10]) + struct.pack(">H", len(h)) + h + bytes([len(r)]) + r + d


cases = {
    "create": rp("/create", "", '{"user_mail":"a@b.c","pass":"pw","name":"Ann"}'),
    "create-noname": rp("/create", "", '{"User_Mail":"a@b.c","PASS":"pw"}'),
    "login": rp("/login", "", '{"user_mail":"a@b.c","pass":"p\\"w"}'),
    "logout-email": rp("/logout", "", '{"user_mail":"a@b.c","token":"t"}'),
    "logout-header": rp("/logout", AUTH),
    "delete": rp("/delete", AUTH),
    "contacts": rp("/contacts", '{"ID":"7","Token":"tok"}'),
    "contacts-numeric-id": rp("/contacts", '{"id":7,"token":"tok"}'),
    "add-contact": rp("/add_contact", AUTH, '{"contact_email":"x@y.z"}'),
    "remove-contact-id": rp("/remove_contact", AUTH, '{"contact_id":"3"}'),
    "remove-contact-email": rp("/remove_contact", AUTH, '{"contact_email":"x@y.z"}'),
    "contact-requests": rp("/contact_requests", AUTH),
    "accept-contact": rp("/accept_contact", AUTH, '{"contact_id":"9"}'),
    "decline-contact": rp("/decline_contact", AUTH, '{"contact_id":" 9"}'),
    "duplicate-key": rp("/contacts", '{"id":"1","ID":"2","token":"t"}'),
    "unknown-route": rp("/nope", "{", ""),
    "typed-route": rp("/login", "", '{"user_mail":"a@b.c","pass":"pw"}')[:1]
    + rp("/LOGIN", "", '{"user_mail":"a@b.c","pass":"pw"}')[1:],
}
for name, data in cases.items():
    write("request_parse", name, data)

# fields_parse: a JSON section.
fields = {
    "empty": b"",
    "blank": b" \t\n",
    "empty-object": b"{}",
    "mixed-case": b'{"Token": "abc", "ID": "4"}',
    "escapes": b'{"name": "Ann \\"the\\" Great \\u00e9 \\ud83d\\ude00"}',
    "types": b'{"id": 42, "ok": true, "o": {"A": [1, 2.5, -0, 1e3]}, "n": null}',
    "duplicate": b'{"token": "a", "TOKEN": "b"}',
    "unicode-key": "{\"\u0130D\": \"x\", \"\u00c9t\u00c9\": 1}".encode(),
    "trailing": b'{"a":1}x',
    "array": b"[]",
    "float": b'{"f": 0.1, "g": 1.7976931348623157e308, "h": 5e-324}',
}
for name, data in fields.items():
    write("fields_parse", name, data)

# request_parse: the key exchange's routes by their index in Route::ALL
# (11 = /call, 17 = /call_key).
ALICE = "pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk="
COMMIT = "a0oliH9TZTQoY1DC5F9jGBa2+AbGO5yPxM4B2Brpk7U="
for name, (idx, data) in {
    "call-commit": (11, '{"contact_id":"2","key_commit":"%s","candidates":["10.0.0.1:5000"]}' % COMMIT),
    "call-key": (17, '{"call_id":"5","key":"%s"}' % ALICE),
    "call-key-short": (17, '{"call_id":"5","key":"AAAA"}'),
}.items():
    write("request_parse", name, bytes([idx]) + struct.pack(">H", len(AUTH)) + AUTH.encode() + data.encode())

# request_parse: the account and privacy routes by their index in Route::ALL
# (19 /rename ... 26 /blocked, after the 19 routes before them).
for name, (idx, data) in {
    "rename": (19, '{"name":"Ann \\"A\\" Lee"}'),
    "change-password": (20, '{"pass":"old password","new_pass":"new password"}'),
    "change-password-missing": (20, '{"pass":"old password"}'),
    "sessions": (21, ''),
    "end-session": (22, '{"session_id":"12"}'),
    "end-session-negative": (22, '{"session_id":"-1"}'),
    "set-status": (23, '{"Status":"DND"}'),
    "set-status-unknown": (23, '{"status":"on_the_moon"}'),
    "block-id": (24, '{"contact_id":"3"}'),
    "block-email": (24, '{"contact_email":"x@y.z"}'),
    "unblock": (25, '{"contact_id":"3"}'),
    "blocked": (26, ''),
}.items():
    write("request_parse", name, bytes([idx]) + struct.pack(">H", len(AUTH)) + AUTH.encode() + data.encode())

# key_exchange: event selector (0 /incoming_call, 1 /call_accepted,
# 2 /call_key, 3 /participant_joined, 4 /call_nonce, 5 /participant_left),
# then the event's data.
USER = '"id":"1","name":"ann","email":"ann@example.org"'
key_exchange = {
    "incoming": (0, '{"call_id":"5","ip":"10.0.0.1",%s,"key_commit":"%s","candidates":[],"participants":[]}'
                 % (USER, COMMIT)),
    "incoming-no-commit": (0, '{"call_id":"5","ip":"10.0.0.1",%s,"key":"%s","participants":[]}' % (USER, ALICE)),
    "accepted": (1, '{"call_id":"5","id":"2","name":"b","email":"b@x","ip":"10.0.0.2","key":"%s"}' % ALICE),
    "reveal": (2, '{"call_id":"5","id":"1","key":"%s"}' % ALICE),
    "reveal-other": (2, '{"call_id":"5","id":"1","key":"zo060cy2M+x7cMF4FKXHbs0CloUFDTRHRboFhw5YfVk="}'),
    "joined": (3, '{"call_id":"5","id":"3","name":"c","email":"c@x","ip":"10.0.0.3","key_commit":"%s",'
               '"candidates":[],"epoch":"1"}' % COMMIT),
    "joined-key-only": (3, '{"call_id":"5","id":"3","name":"c","email":"c@x","ip":"10.0.0.3","key":"%s"}' % ALICE),
    "nonce": (4, '{"call_id":"5","id":"2","nonce":"AAECAwQFBgcICQoLDA0ODw=="}'),
    "left": (5, '{"call_id":"5","id":"2","epoch":"2"}'),
}
for name, (sel, data) in key_exchange.items():
    write("key_exchange", name, bytes([sel]) + data.encode())

# request_parse: messages and call history by their index in Route::ALL
# (19 /send_message, 20 /messages, 21 /mark_read, 22 /unread, 23 /call_history).
for name, (idx, data) in {
    "send-message": (19, '{"contact_id":"2","text":"Are you free at 6? \\u00e9","client_id":"7c1e2a"}'),
    "send-message-no-client-id": (19, '{"contact_id":"2","text":"hi"}'),
    "messages": (20, '{"contact_id":"2","before":"1042","limit":"2"}'),
    "messages-after-all": (20, '{"after":"9","limit":100}'),
    "messages-both": (20, '{"before":"1","after":"2"}'),
    "mark-read": (21, '{"contact_id":"2","message_id":"1041"}'),
    "unread": (22, ''),
    "call-history": (23, '{"before":"88","limit":"1"}'),
}.items():
    write("request_parse", name, bytes([idx]) + struct.pack(">H", len(AUTH)) + AUTH.encode() + data.encode())
for name, data in {
    "send-message": b'{"contact_id":"2","text":"hi \\"you\\"","client_id":"c-1"}',
    "messages-query": b'{"Contact_ID":"2","before":1042,"limit":"50"}',
    "history-query": b'{"before":"88","limit":"101"}',
}.items():
    write("fields_parse", name, data)
