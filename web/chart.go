package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/errandhq/errand/broker"
)

// Chart geometry, in SVG user units.
const (
	chartBins   = 24
	chartWidth  = 720
	chartHeight = 180
	chartLeft   = 40
	chartBottom = 24
	chartTop    = 12
	// chartMaxEvents caps the events of each series a chart reads; a
	// window with more says the chart is capped.
	chartMaxEvents = 10000
)

// chart is the history page's small chart: credentials issued and
// requests refused per period of the window, drawn by the server as SVG
// (no script).
type chart struct {
	Since, Until time.Time
	Bins         []chartBin
	Max          int
	Issued       int
	Refused      int
	Capped       bool
	Width        int
	Height       int
	BaseY        int
	Left         int
	Step         string
}

type chartBin struct {
	Start           time.Time
	Issued, Refused int
	// X, IssuedY, IssuedH, RefusedX, RefusedY, RefusedH place its bars.
	X, IssuedY, IssuedH, RefusedX, RefusedY, RefusedH, BarW float64
}

// chart counts issuance and refusals of the filter's window (the last 24
// hours when it names none) in chartBins periods, with the page's other
// filters (task, agent, user) applied.
func (p *Pages) chart(r *http.Request, v broker.Principal, f broker.HistoryFilter) (chart, error) {
	until, since := f.Until, f.Since
	if until.IsZero() {
		until = p.now().UTC()
	}
	if since.IsZero() || !since.Before(until) {
		since = until.Add(-24 * time.Hour)
	}
	c := chart{Since: since, Until: until, Width: chartWidth, Height: chartHeight, BaseY: chartHeight - chartBottom, Left: chartLeft}
	step := until.Sub(since) / chartBins
	if step <= 0 {
		step = time.Second
	}
	c.Step = step.Round(time.Second).String()
	c.Bins = make([]chartBin, chartBins)
	for i := range c.Bins {
		c.Bins[i].Start = since.Add(time.Duration(i) * step)
	}
	bin := func(t time.Time) int {
		i := int(t.Sub(since) / step)
		return min(max(i, 0), chartBins-1)
	}
	for _, typ := range []string{broker.EventCredentialIssued, broker.EventRequestRefused} {
		q := broker.HistoryFilter{TaskID: f.TaskID, Agent: f.Agent, User: f.User, Type: typ, Since: since, Until: until, Limit: 1000}
		read := 0
		for {
			evs, more, err := p.svc.AuditEvents(r.Context(), v, q)
			if err != nil {
				return chart{}, err
			}
			for _, e := range evs {
				n := 1
				if typ == broker.EventRequestRefused {
					// A summary of unidentified callers' refusals counts many.
					var d struct {
						Count int `json:"count"`
					}
					if json.Unmarshal(e.Detail, &d) == nil && d.Count > 0 {
						n = d.Count
					}
					c.Bins[bin(e.Time)].Refused += n
					c.Refused += n
				} else {
					c.Bins[bin(e.Time)].Issued += n
					c.Issued += n
				}
			}
			read += len(evs)
			if !more {
				break
			}
			if read >= chartMaxEvents {
				c.Capped = true
				break
			}
			q.AfterSeq = evs[len(evs)-1].Seq
		}
	}
	for _, b := range c.Bins {
		c.Max = max(c.Max, b.Issued, b.Refused)
	}
	plotH := float64(chartHeight - chartBottom - chartTop)
	slot := float64(chartWidth-chartLeft) / chartBins
	scale := 0.0
	if c.Max > 0 {
		scale = plotH / float64(c.Max)
	}
	for i := range c.Bins {
		b := &c.Bins[i]
		b.BarW = slot*0.4 - 1
		b.X = float64(chartLeft) + float64(i)*slot + slot*0.1
		b.RefusedX = b.X + slot*0.4
		b.IssuedH, b.RefusedH = float64(b.Issued)*scale, float64(b.Refused)*scale
		b.IssuedY, b.RefusedY = float64(c.BaseY)-b.IssuedH, float64(c.BaseY)-b.RefusedH
	}
	return c, nil
}

// Label is the bin's tooltip.
func (b chartBin) Label() string {
	return fmt.Sprintf("from %s: %d issued, %d refused", b.Start.UTC().Format("2006-01-02 15:04"), b.Issued, b.Refused)
}
