// A logfmt reader for the tests: go-logfmt (github.com/go-logfmt/logfmt,
// the decoder Go kit and Grafana Loki's logfmt parser are built on, from
// Debian's golang-github-go-logfmt-logfmt-dev) decodes each line of stdin
// and writes it back as one JSON line: {"pairs": [[key, value], ...]}, or
// {"error": "..."} when the line is not valid logfmt.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"

	"github.com/go-logfmt/logfmt"
)

type result struct {
	Pairs [][2]string `json:"pairs"`
	Error string      `json:"error,omitempty"`
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for {
		line, err := in.ReadString('\n')
		if line == "" && err != nil {
			break
		}
		res := result{Pairs: [][2]string{}}
		dec := logfmt.NewDecoder(strings.NewReader(strings.TrimSuffix(line, "\n")))
		records := 0
		for dec.ScanRecord() {
			records++
			for dec.ScanKeyval() {
				res.Pairs = append(res.Pairs, [2]string{string(dec.Key()), string(dec.Value())})
			}
		}
		if dec.Err() != nil {
			res.Error = dec.Err().Error()
		} else if records != 1 {
			res.Error = "not one record"
		}
		_ = enc.Encode(res)
		out.Flush()
	}
}
