package broker

import (
	"strings"
	"unicode/utf8"
)

// checkText validates free text that people will read: a task's goal, a
// tool or dataset label, a reason. It must be valid UTF-8 of at most max
// bytes, and hold no character that changes how the text around it is
// shown (DisplayUnsafe): an agent's goal with a newline, or a tool label
// with a right-to-left override, could otherwise write fake lines into
// an approver's view or reorder what the approver reads (H09, R05).
// The refusal names the field and the code point, never the text.
func checkText(field, v string, max int, required bool) error {
	if required && strings.TrimSpace(v) == "" {
		return Errorf(ErrInvalidRequest, "%s is required", field)
	}
	if len(v) > max {
		return Errorf(ErrInvalidRequest, "%s is longer than %d bytes", field, max)
	}
	if !utf8.ValidString(v) {
		return Errorf(ErrInvalidRequest, "%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if DisplayUnsafe(r) {
			return Errorf(ErrInvalidRequest, "%s contains U+%04X, a control or bidirectional formatting character; "+
				"write it on one line without control characters", field, r)
		}
	}
	return nil
}

// DisplayUnsafe reports whether r changes how text around it is displayed
// rather than being displayed itself: the C0 controls (newline and tab
// included), DEL, the C1 controls, the line and paragraph separators
// (U+2028, U+2029), the bidirectional embeddings, overrides and isolates
// (U+202A–U+202E, U+2066–U+2069, the "Trojan Source" characters) and the
// bidirectional marks (U+200E, U+200F, U+061C).
func DisplayUnsafe(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}
