// routing.h: (being written)
#pragma once
