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

package allocator

import "time"

// holdEntry is one hold: a block held until a time.
type holdEntry struct {
	until time.Time
	off   u128
	k     uint8
}

// holdHeap is a min-heap of holds by expiry, so that expiring holds costs
// nothing until the first of them is due.
type holdHeap []holdEntry

func (h *holdHeap) push(e holdEntry) {
	*h = append(*h, e)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].until.Before(s[p].until) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *holdHeap) pop() holdEntry {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && s[c+1].until.Before(s[c].until) {
			c++
		}
		if !s[c].until.Before(s[i].until) {
			break
		}
		s[i], s[c] = s[c], s[i]
		i = c
	}
	*h = s
	return top
}
