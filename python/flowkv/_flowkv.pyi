# stubs: generated below
