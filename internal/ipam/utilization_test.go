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

package ipam

import (
	"math/big"
	"testing"
)

func TestUtilization(t *testing.T) {
	for _, tc := range []struct {
		allocated, usable int64
		want              string
	}{
		{0, 0, "0%"}, // a pool reserved or excluded whole
		{0, 256, "0%"},
		{19, 256, "7.42%"},
		{128, 256, "50%"},
		{256, 256, "100%"},
	} {
		if got := Utilization(big.NewInt(tc.allocated), big.NewInt(tc.usable)); got != tc.want {
			t.Errorf("Utilization(%d, %d) = %s, want %s", tc.allocated, tc.usable, got, tc.want)
		}
	}
	huge := new(big.Int).Lsh(big.NewInt(1), 80)
	if got := Utilization(big.NewInt(1), huge); got != "<0.01%" {
		t.Errorf("one address of 2^80 = %s, want <0.01%%", got)
	}
}
