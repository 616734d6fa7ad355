package sqlq

import (
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// FuzzWhereNeverContainsInput: the SQL text of a filter depends only on
// which filters are set, never on their values; the values travel as binds.
func FuzzWhereNeverContainsInput(f *testing.F) {
	for _, s := range []string{"' OR 1=1--", "-1 OR 1=1", "$tag$ x $tag$", "a#b", "x'); DROP TABLE tasks;--", "$1"} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, taskID, actor, typ string) {
		f := broker.HistoryFilter{TaskID: taskID, Actor: actor, Type: typ, Agent: actor, User: typ, Code: taskID,
			Since: time.Unix(1, 0), Limit: 10}
		ref := f
		ref.TaskID, ref.Type, ref.Code = placeholder(taskID), placeholder(typ), placeholder(taskID)
		ref.Actor, ref.Agent, ref.User = placeholder(actor), placeholder(actor), placeholder(typ)
		if strings.Contains(actor, "#") {
			ref.Actor, ref.Agent = "i#s", "i#s"
		}
		if strings.Contains(typ, "#") {
			ref.User = "i#s"
		}
		for name, build := range map[string]func(broker.HistoryFilter) *Where{
			"events":      func(h broker.HistoryFilter) *Where { return Events(h, nil, "code") },
			"credentials": func(h broker.HistoryFilter) *Where { return Credentials(h, nil) },
		} {
			got, want := build(f), build(ref)
			if got.SQL() != want.SQL() {
				t.Fatalf("%s: SQL text depends on values:\n%s\n%s", name, got.SQL(), want.SQL())
			}
			for _, v := range []string{taskID, typ} {
				if v != "" && !contains(got.Args, v) {
					t.Fatalf("%s: value %q is not bound", name, v)
				}
			}
		}
	})
}

func placeholder(v string) string {
	if v == "" {
		return ""
	}
	return "v"
}

func contains(args []any, v string) bool {
	for _, a := range args {
		if a == v {
			return true
		}
	}
	return false
}
