// profile.h: (being written)
#pragma once
