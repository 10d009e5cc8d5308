/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command memshares sums a heap profile's samples by what holds them, per
// claim: the rows of docs/design.md, "Memory per claim". It reads the
// output of
//
//	go tool pprof -sample_index=inuse_space -base heap-1-0.pb.gz -traces bin/manager heap-1-10000.pb.gz
//
// on its standard input and counts each sample once, in the first share
// whose pattern its stack holds.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var shares = []struct {
	name     string
	patterns []string
}{
	{"the ledger sweep's sightings", []string{"sightings"}},
	{"the claims' records (ipam.ClaimRecord)", []string{"RecordClaim"}},
	// Before the parsed ledgers: an allocation's record packs its strings
	// with internal/ipam's PackStrings.
	{"the allocations' records", []string{"(*allocations)", "allocStore"}},
	{"the parsed ledgers (internal/ipam) and the allocator", []string{"kipam/internal/ipam", "kipam/internal/allocator"}},
	{"the caches' stores and indexes", []string{"tools/cache.(*cache)", "threadSafeMap", "storeIndex", "holdings"}},
	{"the work queues", []string{"priorityqueue", "workqueue"}},
	{"the informers' listener buffers", []string{"RingGrowing", "processorListener"}},
	{"the decoded objects", []string{"json", "Decode", "reflect.", "Unmarshal"}},
}

// sample is the first line of a stack in pprof's -traces output: its
// size, then its innermost frame.
var sample = regexp.MustCompile(`^\s*(-?[\d.]+)(B|kB|MB|GB)\s+(\S+)`)

var units = map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}

func main() {
	claims := flag.Int("claims", 10000, "the live claims the profile's difference holds")
	flag.Parse()
	sums := make([]float64, len(shares)+1)
	add := func(size float64, stack []string) {
		s := strings.Join(stack, "\n")
		for i, sh := range shares {
			for _, p := range sh.patterns {
				if strings.Contains(s, p) {
					sums[i] += size
					return
				}
			}
		}
		sums[len(shares)] += size
	}
	var (
		size  float64
		stack []string
	)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		switch m := sample.FindStringSubmatch(line); {
		case strings.HasPrefix(line, "-----------+"):
			if stack != nil {
				add(size, stack)
			}
			stack = nil
		case m != nil && stack == nil:
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				log.Fatal(err)
			}
			size, stack = v*units[m[2]], []string{m[3]}
		case stack != nil && strings.TrimSpace(line) != "":
			stack = append(stack, strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	if stack != nil {
		add(size, stack)
	}
	var all float64
	for i, v := range sums {
		name := "the rest"
		if i < len(shares) {
			name = shares[i].name
		}
		fmt.Printf("%s\t%.0f\n", name, v/float64(*claims))
		all += v
	}
	fmt.Printf("in all, sampled\t%.0f\n", all/float64(*claims))
}
