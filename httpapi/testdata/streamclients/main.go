// Command streamclients holds revocation streams open against an Errand
// server, in a process of its own, for BenchmarkR03IdleStreams: the
// clients' goroutines and buffers then do not weigh on the server measured.
//
// It opens -each streams for every bearer token of -tokens (one a line),
// from position -since, and prints "open <n>" (or "fail <reason>"). Each
// line "expect <k>" read from stdin is answered "got <k>" once the streams
// together have received k events. At the end of stdin it exits.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "the server's base URL")
	since := flag.String("since", "0", "feed position to start after")
	tokens := flag.String("tokens", "", "file of bearer tokens, one a line")
	each := flag.Int("each", 4, "streams per token")
	flag.Parse()
	raw, err := os.ReadFile(*tokens)
	if err != nil {
		fmt.Println("fail", err)
		os.Exit(1)
	}
	toks := strings.Fields(string(raw))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
	var (
		received atomic.Int64
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 16)
		failed   atomic.Value
		opened   atomic.Int64
	)
	for i := 0; i < len(toks)*(*each); i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, "GET", *url+"/v1/revocations/stream?since="+*since, nil)
			req.Header.Set("Authorization", "Bearer "+toks[i / *each])
			res, err := client.Do(req)
			if err != nil {
				failed.Store(err.Error())
				return
			}
			if res.StatusCode != http.StatusOK {
				failed.Store(res.Status)
				res.Body.Close()
				return
			}
			opened.Add(1)
			go func() {
				defer res.Body.Close()
				sc := bufio.NewScanner(res.Body)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "id: ") {
						received.Add(1)
					}
				}
			}()
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		fmt.Println("fail", f)
		os.Exit(1)
	}
	fmt.Println("open", opened.Load())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		k, err := strconv.ParseInt(strings.TrimPrefix(in.Text(), "expect "), 10, 64)
		if err != nil {
			fmt.Println("fail", err)
			os.Exit(1)
		}
		for received.Load() < k {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("got", k)
	}
}
