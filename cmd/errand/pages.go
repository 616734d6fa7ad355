package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// paging is --limit, --cursor and --all on a command that prints a list.
type paging struct {
	limit  int
	cursor string
	all    bool
}

func (p *paging) register(c *cobra.Command) {
	c.Flags().IntVar(&p.limit, "limit", 0, "page size (the server's default is 100, its maximum 1000)")
	c.Flags().StringVar(&p.cursor, "cursor", "", "start from this page, as the previous one's next_cursor names it")
	c.Flags().BoolVar(&p.all, "all", false, "follow next_cursor to the end and print every page as one list")
}

// page is what a list command read: the items under the answer's list
// key, the cursor of the page that follows (empty at the end), and the
// answer to print with -o json or yaml (every page's items under the list
// key, and next_cursor when more remain).
type page struct {
	items []json.RawMessage
	next  string
	raw   []byte
}

// list reads path's list (under key) from p's cursor on: one page, or
// every page with --all. cursorParam names the query parameter that takes
// the cursor ("cursor", or "since" for the revocation feed).
func (g *globals) list(ctx context.Context, path string, q url.Values, key, cursorParam string, p paging) (page, error) {
	if p.limit < 0 {
		return page{}, usageErrorf("--limit must be positive")
	}
	q = cloneValues(q)
	if p.limit > 0 {
		q.Set("limit", strconv.Itoa(p.limit))
	}
	cursor := p.cursor
	var out page
	for {
		if cursor != "" {
			q.Set(cursorParam, cursor)
		}
		u := path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		var body map[string]json.RawMessage
		if _, err := g.client().Do(ctx, http.MethodGet, u, nil, &body); err != nil {
			return page{}, err
		}
		var items []json.RawMessage
		if err := json.Unmarshal(body[key], &items); err != nil {
			return page{}, fmt.Errorf("unexpected answer from %s: %w", path, err)
		}
		out.items = append(out.items, items...)
		var next string
		if n, ok := body["next_cursor"]; ok {
			_ = json.Unmarshal(n, &next)
		}
		more := next != ""
		if cursorParam == "since" {
			// The revocation feed always names the position it reached;
			// it has more only when the page came back full.
			more = len(items) >= pageSize(p.limit)
		}
		if !more || !p.all {
			docNext := next
			if !more {
				out.next = ""
				if cursorParam != "since" {
					docNext = ""
				}
			} else {
				out.next = next
			}
			out.raw = listDocument(key, out.items, docNext)
			return out, nil
		}
		cursor = next
	}
}

// pageSize is the page the server answers for --limit n.
func pageSize(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}

func listDocument(key string, items []json.RawMessage, next string) []byte {
	doc := map[string]any{key: items}
	if items == nil {
		doc[key] = []json.RawMessage{}
	}
	if next != "" {
		doc["next_cursor"] = next
	}
	raw, _ := json.Marshal(doc)
	return raw
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// decodeItems decodes a page's items into T.
func decodeItems[T any](items []json.RawMessage) ([]T, error) {
	out := make([]T, 0, len(items))
	for _, raw := range items {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// moreNote ends a table whose list has more pages: how to read them.
func moreNote(w io.Writer, flag, next string) {
	if next != "" {
		fmt.Fprintf(w, "more: --%s %s (or --all)\n", flag, next)
	}
}
