//go:build chaos

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

package chaos

import (
	"testing"
	"time"
)

func TestScheduleSelectsAndWeighsKinds(t *testing.T) {
	s := makeSchedule(42, 15*time.Second, 30*time.Minute, poolLease, orphanGrace, []string{faultKillOwner, faultKillOwner, faultStopOwner})
	if len(s.background) != 0 {
		t.Errorf("the background track has %d faults; none of its kinds was selected", len(s.background))
	}
	n := map[string]int{}
	for _, st := range s.process {
		n[st.Kind]++
	}
	if len(n) != 2 || n[faultKillOwner] < 2*n[faultStopOwner]-2 || n[faultKillOwner] > 2*n[faultStopOwner]+2 {
		t.Errorf("faults planned: %v; want kill-owner twice as often as stop-owner, and nothing else", n)
	}
}

func TestClockOffsetsPassTheOrphanGrace(t *testing.T) {
	signs := map[bool]int{}
	for seed := range uint64(20) {
		for _, st := range makeSchedule(seed, 15*time.Second, 30*time.Minute, poolLease, orphanGrace, nil).process {
			if st.Kind != faultClockOffset {
				continue
			}
			if d := st.Shift.Abs(); d <= orphanGrace {
				t.Errorf("seed %d: a clock offset of %s is within the orphan grace %s", seed, st.Shift, orphanGrace)
			}
			signs[st.Shift > 0]++
		}
	}
	if signs[true] == 0 || signs[false] == 0 {
		t.Errorf("clock offsets ahead and behind: %v; want both", signs)
	}
}
