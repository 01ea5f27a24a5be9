/* kp_pan.h — kioskpay never needs a card number (PAN), so none may enter it:
 * the edges (API bodies, the engine's orders, host frames, config) refuse
 * text that looks like one, and the log masks it. One detector for all of
 * them, and for the test that scans the journal, logs and exports. */
#ifndef KP_PAN_H
#define KP_PAN_H

#include <stdbool.h>
#include <stddef.h>

/* What counts as a card number: a run of 13..19 decimal digits, optionally
 * grouped by single ' ' or '-' between digits ("4111 1111 1111 1111"), that
 * starts with 2..6 (the issuer ranges of payment cards: Mastercard 2-series,
 * Amex/Diners/JCB 3, Visa 4, Mastercard/Maestro 5, Discover/UnionPay 6) and
 * passes the Luhn check. The run must stand alone: a letter, digit, '_', '-'
 * or '.' right before it, or a letter, digit, '_' or '-' right after it, make
 * it part of an identifier or a decimal (UUID and hex ids, "txn-…",
 * "0.4111…"), not a number. Millisecond timestamps (13 digits starting with 1
 * until 2033) and amounts do not match. */

/* True if text[0..len) holds a card number. text need not be NUL-terminated;
 * bytes outside ASCII are separators. */
bool kp_text_has_pan(const char *text, size_t len);

/* Replace the digits of every card number in text[0..len) with '*', except
 * the first six and the last four (the most PCI DSS lets a display show).
 * Returns how many numbers were masked. */
size_t kp_text_mask_pan(char *text, size_t len);

#endif
