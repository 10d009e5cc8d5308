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
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PolicyDir holds kipam's admission policies (ValidatingAdmissionPolicies
// and their bindings), which an install applies beside its CRDs and
// webhooks.
var PolicyDir = filepath.Join(Root, "config", "policy")

// ReadObjects decodes every Kubernetes object in path (a YAML file, or a
// directory of them); documents without a kind, such as kustomize's own
// files, are left out.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	files := []string{path}
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.yaml"))
		if err != nil {
			return nil, err
		}
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if u.GetKind() != "" {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// InstallPolicies creates the admission policies and their bindings in dir
// (kipam's: PolicyDir), as an install does. The API server enforces a
// policy a moment after its binding is created: a caller that depends on
// it polls.
func InstallPolicies(ctx context.Context, c client.Client, dir string) error {
	objs, err := ReadObjects(dir)
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return fmt.Errorf("no admission policies in %s", dir)
	}
	for _, u := range objs {
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}
