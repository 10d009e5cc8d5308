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

package testenv

import (
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func TestStartControllerManagerFailsWithoutBinary(t *testing.T) {
	dir := t.TempDir()
	c, err := StartControllerManager(&envtest.Environment{BinaryAssetsDirectory: dir}, nil)
	if err == nil {
		_ = c.Stop()
		t.Fatal("started without a kube-controller-manager binary")
	}
	if want := "no kube-controller-manager in " + dir + ": run `make controlplane`"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func TestStopNil(t *testing.T) {
	var c *ControllerManager
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}
